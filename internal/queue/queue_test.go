package queue

import (
	"slices"
	"testing"

	"github.com/riverqueue/river"
)

type plainArgs struct{}

func (plainArgs) Kind() string { return "plain" }

func TestWakeups(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		params []river.InsertManyParams
		want   []string
	}{
		{"none", nil, nil},
		{"a queue from the job's own options, once", []river.InsertManyParams{
			{Args: DeliverArgs{DeliveryID: "a"}}, {Args: DeliverArgs{DeliveryID: "b"}},
		}, []string{`{"queue": "push"}`}},
		{"options at insert win", []river.InsertManyParams{
			{Args: DeliverArgs{}, InsertOpts: &river.InsertOpts{Queue: "other"}},
		}, []string{`{"queue": "other"}`}},
		{"the default queue", []river.InsertManyParams{{Args: plainArgs{}}}, []string{`{"queue": "default"}`}},
		{"each queue", []river.InsertManyParams{
			{Args: DeliverArgs{}}, {Args: WebhookArgs{}}, {Args: DeliverArgs{}, InsertOpts: RescueOpts()},
		}, []string{`{"queue": "push"}`, `{"queue": "webhook"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Wakeups(tt.params); !slices.Equal(got, tt.want) {
				t.Errorf("Wakeups = %q, want %q", got, tt.want)
			}
		})
	}
}
