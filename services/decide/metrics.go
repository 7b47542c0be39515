package decide

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/telemetry"
)

type metrics struct {
	decisions      *prometheus.CounterVec
	duplicates     prometheus.Counter
	policyDuration prometheus.Histogram
	regoDuration   *prometheus.HistogramVec
	waits          *prometheus.CounterVec
	records        *prometheus.CounterVec
	failures       *prometheus.CounterVec
	conversions    *prometheus.CounterVec
	outbox         telemetry.BacklogGauges
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_decide_decisions_total",
			Help: "Final decisions made, by campaign id and outcome (send, deferred, skipped_audience, skipped_consent, capped, holdout, exited). The campaign label is bounded by the number of active campaigns.",
		}, []string{"campaign", "outcome"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_decide_duplicate_triggers_total",
			Help: "Triggers a campaign had already decided (redelivered events or changes, repeated Decide request ids).",
		}),
		policyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "whisper_decide_policy_reserve_duration_seconds",
			Help:    "Time of one contact-policy reservation call, for one decision or a batch of them (a poll's or coalesced Decide calls'): reading the users' counters in Redis, evaluating the Rego policy and running the reservation scripts.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
		regoDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "whisper_decide_policy_evaluation_duration_seconds",
			Help:    "Time of one evaluation of the contact policy's Rego query; memoized=true when the answer came from the policy's memo without running Rego.",
			Buckets: prometheus.ExponentialBuckets(0.000005, 2.5, 12),
		}, []string{"memoized"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_decide_waits_total",
			Help: "Waits started and ended (by delay, awaited event, exit event or timeout).",
		}, []string{"transition"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_decide_records_total",
			Help: "Records consumed, by topic (whisper.events, whisper.profiles) and outcome (applied, skipped: undecodable or without a user id).",
		}, []string{"topic", "outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_decide_failures_total",
			Help: "Failed attempts, by operation; each is retried: records with backoff and no offset committed meanwhile, a decision the broker refused (publish decisions) by the outbox sweeper, an outbox deletion (delete outbox) at the next one.",
		}, []string{"operation"}),
		conversions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_decide_conversions_total",
			Help: "Goal events attributed to a decision within its campaign's attribution window, by campaign id (bounded by the number of campaigns with a goal).",
		}, []string{"campaign"}),
		outbox: telemetry.NewBacklogGauges("whisper_decide_outbox",
			"Decisions in the outbox: committed, not yet acknowledged by the broker on whisper.decisions (or acknowledged and not yet deleted), as of the last sweep.",
			"Age of the oldest decision in the outbox as of the last sweep; 0 when it is empty."),
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.duplicates, m.policyDuration, m.regoDuration, m.waits, m.records, m.failures, m.conversions,
			m.outbox.Items, m.outbox.OldestAge)
	}
	return m
}

func (m *metrics) decided(d *decisionv1.Decision) {
	m.decisions.WithLabelValues(d.GetCampaignId(), outcomeName(d.GetOutcome())).Inc()
}

// ObservePolicyEval records the time of one evaluation of the contact
// policy's Rego query: pass it as contact.Options.ObserveEval (through a
// closure, since the policy is built before the Service).
func (s *Service) ObservePolicyEval(d time.Duration, memoized bool) {
	s.metrics.regoDuration.WithLabelValues(strconv.FormatBool(memoized)).Observe(d.Seconds())
}
