// Package metrics defines the service's Prometheus metrics on a registry the
// server owns (no global registry), and the collector for pool statistics.
package metrics

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every metric the service exports.
type Metrics struct {
	Registry *prometheus.Registry

	HTTPRequests *prometheus.CounterVec
	HTTPDuration *prometheus.HistogramVec
	AuthFailures *prometheus.CounterVec

	AuditHeadSeq  *prometheus.GaugeVec
	AuditHeadHash *prometheus.GaugeVec
	AuditSealed   prometheus.Counter

	PushDeliveries       *prometheus.CounterVec
	PushProviderFaults   *prometheus.CounterVec
	PushCommitToProvider *prometheus.HistogramVec
	PushToAnswer         prometheus.Histogram
}

// New registers the metrics, the Go runtime's and the process's on a fresh
// registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushmfa_http_requests_total",
			Help: "HTTP requests by method, route pattern and status code.",
		}, []string{"method", "route", "status"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushmfa_http_request_duration_seconds",
			Help:    "HTTP request latency by method and route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushmfa_auth_failures_total",
			Help: "Failed authentications by credential scheme (bearer, device) and outcome (unauthorized, forbidden, rate_limited).",
		}, []string{"scheme", "outcome"}),
		// Tenants are labelled by id, not slug, so the metrics do not name
		// the organisations served.
		AuditHeadSeq: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushmfa_audit_chain_head_seq",
			Help: "Sequence number of the last sealed audit event, per tenant id.",
		}, []string{"tenant_id"}),
		AuditHeadHash: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushmfa_audit_chain_head_info",
			Help: "Always 1; the hash label is the head of the tenant's audit chain, to anchor it outside the database.",
		}, []string{"tenant_id", "hash"}),
		AuditSealed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushmfa_audit_events_sealed_total",
			Help: "Audit events chained by the sealer.",
		}),
		PushDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushmfa_push_deliveries_total",
			Help: "Push delivery attempts by provider (apns, fcm, log) and outcome (sent, retrying, failed, token_invalid, skipped).",
		}, []string{"provider", "outcome"}),
		PushProviderFaults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushmfa_push_provider_faults_total",
			Help: "Pushes a provider refused for a reason on our side (credentials, topic, permission), by provider and reason.",
		}, []string{"provider", "reason"}),
		PushCommitToProvider: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pushmfa_push_commit_to_provider_seconds",
			Help: "Time from the commit of a push (with its challenge) to the provider accepting it, by provider: " +
				"from PostgreSQL's acknowledgement of the commit when the creating process sends the push, " +
				"else from the delivery's row, written just before the commit.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"provider"}),
		PushToAnswer: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushmfa_push_to_answer_seconds",
			Help:    "Time from a challenge's push being accepted by the provider to that device's answer.",
			Buckets: []float64{.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 120, 300, 600},
		}),
	}
	reg.MustRegister(m.HTTPRequests, m.HTTPDuration, m.AuthFailures, m.AuditHeadSeq, m.AuditHeadHash, m.AuditSealed,
		m.PushDeliveries, m.PushProviderFaults, m.PushCommitToProvider, m.PushToAnswer,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetAuditHead exports a tenant's chain head, replacing the previous hash
// label so only the current head is exported.
func (m *Metrics) SetAuditHead(tenantID string, seq int64, hash string) {
	m.AuditHeadSeq.WithLabelValues(tenantID).Set(float64(seq))
	m.AuditHeadHash.DeletePartialMatch(prometheus.Labels{"tenant_id": tenantID})
	m.AuditHeadHash.WithLabelValues(tenantID, hash).Set(1)
}

// RegisterPool exports a pgx pool's statistics.
func (m *Metrics) RegisterPool(pool *pgxpool.Pool) error {
	return m.Registry.Register(poolCollector{pool: pool})
}

var (
	poolAcquired = prometheus.NewDesc("pushmfa_db_pool_acquired_connections", "Connections in use.", nil, nil)
	poolIdle     = prometheus.NewDesc("pushmfa_db_pool_idle_connections", "Idle connections.", nil, nil)
	poolTotal    = prometheus.NewDesc("pushmfa_db_pool_total_connections", "Open connections.", nil, nil)
	poolMax      = prometheus.NewDesc("pushmfa_db_pool_max_connections", "Pool size limit.", nil, nil)
	poolAcquires = prometheus.NewDesc("pushmfa_db_pool_acquires_total", "Successful acquires.", nil, nil)
	poolEmpty    = prometheus.NewDesc("pushmfa_db_pool_empty_acquires_total", "Acquires that had to wait for a connection.", nil, nil)
	poolWait     = prometheus.NewDesc("pushmfa_db_pool_acquire_wait_seconds_total", "Time spent waiting for a connection.", nil, nil)
)

type poolCollector struct{ pool *pgxpool.Pool }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolAcquired, poolIdle, poolTotal, poolMax, poolAcquires, poolEmpty, poolWait} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolAcquired, prometheus.GaugeValue, float64(s.AcquiredConns()))
	ch <- prometheus.MustNewConstMetric(poolIdle, prometheus.GaugeValue, float64(s.IdleConns()))
	ch <- prometheus.MustNewConstMetric(poolTotal, prometheus.GaugeValue, float64(s.TotalConns()))
	ch <- prometheus.MustNewConstMetric(poolMax, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(poolAcquires, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolEmpty, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWait, prometheus.CounterValue, s.AcquireDuration().Seconds())
}

// QueueDepth counts a queue's jobs by state; it is asked at each scrape.
type QueueDepth func(ctx context.Context) (map[string]int64, error)

var queueDepth = prometheus.NewDesc("pushmfa_push_queue_jobs", "Push jobs waiting or running, by state (available, scheduled, retryable, running).",
	[]string{"state"}, nil)

// RegisterWaiters exports how many long-polls wait in this process.
func (m *Metrics) RegisterWaiters(waiting func() int) error {
	return m.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushmfa_longpoll_waiters",
		Help: "Long-polls waiting in this process for a challenge to resolve.",
	}, func() float64 { return float64(waiting()) }))
}

// RegisterPushQueue exports the push queue's depth.
func (m *Metrics) RegisterPushQueue(depth QueueDepth) error {
	return m.Registry.Register(queueCollector{depth: depth})
}

type queueCollector struct{ depth QueueDepth }

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueDepth }

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.depth(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDepth, err)
		return
	}
	for _, state := range []string{"available", "scheduled", "retryable", "running"} {
		ch <- prometheus.MustNewConstMetric(queueDepth, prometheus.GaugeValue, float64(counts[state]), state)
	}
}
