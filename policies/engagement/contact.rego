# METADATA
# title: Contact policy
# description: |
#   The guardrails every marketing message passes before it is sent: per user
#   frequency caps per channel per local day and ISO week across all
#   campaigns, quiet hours in the user's timezone (deferral to their end),
#   a minimum gap between two messages, and the last slots of each cap kept
#   for high-priority campaigns. Transactional messages bypass all of them.
#   The decide target evaluates data.whisper.engagement.contact.decision once
#   per message (services/decide/contact) and then reserves the message in
#   Redis against the limits this policy returns, atomically.
#
#   This package defines no deny/warn rule, so platformctl check, which
#   loads every policy under policies/, never evaluates it on manifests.
package whisper.engagement.contact

# Input (built by services/decide/contact; times are Unix nanoseconds):
#
#   request:  {channel, campaign_id, priority (0-100), transactional}
#   time:     {send_at_ns, timezone (IANA, valid; "UTC" by default),
#              local: {date: "YYYY-MM-DD", time: "HH:MM", minute_of_day}}
#   counters: {day, week: messages already reserved on this channel in the
#              local day and ISO week of send_at (other decisions only);
#              previous_ns, next_ns: the nearest other reserved message of
#              the user, any gap-counted channel, at or before / after
#              send_at; absent when there is none}
#   config:   {per_day, per_week (0 = no cap), quiet_hours (bool: apply to
#              this channel), quiet_start, quiet_end ("HH:MM" local;
#              equal means none), min_gap_ns (0 = none),
#              priority_threshold, priority_headroom}
#
# Output, decision:
#
#   allow:          false when a cap or the minimum gap forbids the message
#   rule:           the rule that denied or deferred, "" when none did
#   defer_until_ns: present when quiet hours defer the message; the caller
#                   evaluates again at that time (counters of that day)
#   limits:         {day, week, min_gap_ns}: what the reservation must
#                   re-check atomically (0 = unlimited / no gap)
#   steps:          [{name, result, inputs: {string: string}}] for
#                   ExplainDecision
#
# Priority headroom: for a campaign with priority below priority_threshold,
# each cap is lowered by priority_headroom, but never below 1, so a cap of
# 3 with headroom 1 lets ordinary campaigns send 2 and keeps the 3rd for a
# campaign of priority >= threshold; a cap of 1 stays 1 for everyone.

req := input.request

cfg := input.config

counters := input.counters

send_at := input.time.send_at_ns

tz := input.time.timezone

transactional if req.transactional == true

low_priority if req.priority < cfg.priority_threshold

# ---- time helpers -------------------------------------------------------

minute_ns := 60000000000

day_ns := 86400000000000

# minutes("HH:MM") is the minute of the day.
minutes(hhmm) := (to_number(p[0]) * 60) + to_number(p[1]) if p := split(hhmm, ":")

wall_layout := "2006-01-02T15:04:05"

# offset_ns(t) is the zone's UTC offset at the instant t.
offset_ns(t) := time.parse_ns(wall_layout, time.format([t, tz, wall_layout])) - t

# local_to_ns(w) is the instant whose wall clock in tz reads w (a wall time
# written as if it were UTC). Two rounds of the offset make it right on
# both sides of a daylight-saving change.
local_to_ns(w) := w - offset_ns(w - offset_ns(w))

local(t) := time.format([t, tz, "2006-01-02 15:04 MST"])

# ---- quiet hours --------------------------------------------------------

q_start := minutes(cfg.quiet_start)

q_end := minutes(cfg.quiet_end)

now_minute := input.time.local.minute_of_day

quiet_applies if {
	not transactional
	cfg.quiet_hours == true
	q_start != q_end
}

# A window inside one day (e.g. 12:00-14:00) or across midnight (21:00-08:00).
in_quiet if {
	quiet_applies
	q_start < q_end
	now_minute >= q_start
	now_minute < q_end
}

in_quiet if {
	quiet_applies
	q_start > q_end
	now_minute >= q_start
}

in_quiet if {
	quiet_applies
	q_start > q_end
	now_minute < q_end
}

# The quiet period ends today, or tomorrow when it started this evening.
quiet_end_day := 1 if {
	q_start > q_end
	now_minute >= q_start
} else := 0

defer_until := local_to_ns(((time.parse_ns("2006-01-02", input.time.local.date) + (quiet_end_day * day_ns)) + (q_end * minute_ns))) if in_quiet

# ---- caps ---------------------------------------------------------------

# limit(cap) is the cap this campaign may fill: 0 when there is none.
limit(cap) := 0 if {
	cap <= 0
} else := cap if {
	not low_priority
} else := max([cap - cfg.priority_headroom, 1])

day_limit := limit(cfg.per_day)

week_limit := limit(cfg.per_week)

# cap_hit(count, cap, lim) is the rule a cap denies with, undefined when
# the message fits.
cap_hit(count, cap, lim, name) := name if {
	lim > 0
	count >= cap
} else := "priority_headroom" if {
	lim > 0
	count >= lim
}

cap_result(count, cap, lim) := "no cap" if {
	lim == 0
} else := sprintf("capped: %d of %d sent", [count, cap]) if {
	count >= cap
} else := sprintf("reserved for priority >= %d: %d of %d sent, %d open to priority %d", [cfg.priority_threshold, count, cap, lim, req.priority]) if {
	count >= lim
} else := sprintf("ok: %d of %d sent", [count, lim])

# ---- minimum gap --------------------------------------------------------

gap := cfg.min_gap_ns if not transactional

gap := 0 if transactional

too_close if {
	gap > 0
	send_at - counters.previous_ns < gap
}

too_close if {
	gap > 0
	counters.next_ns - send_at < gap
}

neighbour(key) := local(counters[key]) if {
	counters[key]
} else := "none"

# ---- decision -----------------------------------------------------------

denial := r if {
	r := cap_hit(counters.week, cfg.per_week, week_limit, "weekly_cap")
} else := r if {
	r := cap_hit(counters.day, cfg.per_day, day_limit, "daily_cap")
} else := "min_gap" if {
	too_close
}

limits := {"day": day_limit, "week": week_limit, "min_gap_ns": gap}

decision := {"allow": true, "rule": "", "limits": {"day": 0, "week": 0, "min_gap_ns": 0}, "steps": steps} if {
	transactional
} else := {"allow": true, "rule": "quiet_hours", "defer_until_ns": defer_until, "limits": limits, "steps": steps} if {
	in_quiet
} else := {"allow": false, "rule": denial, "limits": limits, "steps": steps} if {
	denial
} else := {"allow": true, "rule": "", "limits": limits, "steps": steps}

# ---- explanation --------------------------------------------------------

at_inputs := {
	"send_at": local(send_at),
	"timezone": tz,
}

step_transactional := {
	"name": "transactional",
	"result": "bypass caps, quiet hours and gap",
	"inputs": {"transactional": "true"},
} if transactional

step_transactional := {
	"name": "transactional",
	"result": "no: guardrails apply",
	"inputs": {"transactional": "false"},
} if not transactional

quiet_result := "deferred to the end of quiet hours" if {
	in_quiet
} else := "outside quiet hours" if {
	quiet_applies
} else := "not applicable to this channel" if {
	not transactional
} else := "bypassed"

quiet_inputs := object.union(at_inputs, {
	"quiet_start": cfg.quiet_start,
	"quiet_end": cfg.quiet_end,
	"defer_until": local(defer_until),
}) if {
	in_quiet
} else := object.union(at_inputs, {"quiet_start": cfg.quiet_start, "quiet_end": cfg.quiet_end})

cap_step(name, count, cap, lim) := {
	"name": name,
	"result": "bypassed",
	"inputs": {},
} if {
	transactional
} else := {
	"name": name,
	"result": "checked at the deferred time",
	"inputs": {},
} if {
	in_quiet
} else := {
	"name": name,
	"result": cap_result(count, cap, lim),
	"inputs": {
		"channel": req.channel,
		"sent": sprintf("%d", [count]),
		"cap": sprintf("%d", [cap]),
		"limit_for_priority": sprintf("%d", [lim]),
		"priority": sprintf("%d", [req.priority]),
		"priority_threshold": sprintf("%d", [cfg.priority_threshold]),
	},
}

gap_result := "bypassed" if {
	transactional
} else := "checked at the deferred time" if {
	in_quiet
} else := "no minimum gap" if {
	gap == 0
} else := "too close to another message" if {
	too_close
} else := "ok"

steps := [
	step_transactional,
	{"name": "quiet_hours", "result": quiet_result, "inputs": quiet_inputs},
	cap_step("weekly_cap", counters.week, cfg.per_week, week_limit),
	cap_step("daily_cap", counters.day, cfg.per_day, day_limit),
	{"name": "min_gap", "result": gap_result, "inputs": {
		"min_gap_minutes": sprintf("%d", [round(gap / minute_ns)]),
		"previous": neighbour("previous_ns"),
		"next": neighbour("next_ns"),
	}},
]
