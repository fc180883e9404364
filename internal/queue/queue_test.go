package queue

import (
	"testing"

	"github.com/riverqueue/river"
)

type plainArgs struct{}

func (plainArgs) Kind() string { return "plain" }

func TestOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		params river.InsertManyParams
		want   string
	}{
		{"the job's own options", river.InsertManyParams{Args: DeliverArgs{}}, QueuePush},
		{"options at insert win", river.InsertManyParams{Args: DeliverArgs{}, InsertOpts: &river.InsertOpts{Queue: "other"}}, "other"},
		{"options at insert without a queue", river.InsertManyParams{Args: WebhookArgs{}, InsertOpts: &river.InsertOpts{MaxAttempts: 2}}, QueueWebhook},
		{"the rescue's", river.InsertManyParams{Args: DeliverArgs{}, InsertOpts: RescueOpts()}, QueuePush},
		{"the default queue", river.InsertManyParams{Args: plainArgs{}}, river.QueueDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Of(tt.params); got != tt.want {
				t.Errorf("Of = %q, want %q", got, tt.want)
			}
		})
	}
}
