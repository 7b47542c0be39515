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

# Input (built by services/decide/contact; times are Unix nanoseconds of
# whole minutes, the policy's resolution):
#
#   request:  {channel, priority (0-100), transactional}
#   time:     {send_at_ns, timezone (IANA, valid; "UTC" by default),
#              local: {date: "YYYY-MM-DD", minute_of_day,
#                      text: "YYYY-MM-DD HH:MM ZONE"}}
#   counters: {day, week: messages already reserved on this channel in the
#              local day and ISO week of send_at (other decisions only);
#              previous_ns, next_ns: the nearest other reserved message of
#              the user, any gap-keeping channel, at or before / after
#              send_at, and previous_text, next_text, the same as local
#              times; all four absent when there is none}
#   config:   {per_day, per_week (0 = no cap), quiet_hours (bool: apply to
#              this channel), quiet_start, quiet_end ("HH:MM" local) and
#              quiet_start_minute, quiet_end_minute (the same as minutes of
#              the day; equal means none), min_gap_ns (0 = none),
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
#   steps:          [{name, result, inputs: {name: string, number or
#                   boolean}}] for ExplainDecision
#
# Priority headroom: for a campaign with priority below priority_threshold,
# each cap is lowered by priority_headroom, but never below 1, so a cap of
# 3 with headroom 1 lets ordinary campaigns send 2 and keeps the 3rd for a
# campaign of priority >= threshold; a cap of 1 stays 1 for everyone.
#
# The policy runs for every message, so it is written to be cheap: the
# caller passes minutes and local times already computed, and the steps
# carry raw values rather than formatted text. Only a deferral calls the
# time builtins.
#
# The decision must stay a pure function of input (no time.now_ns, no
# data, no http): the caller memoizes it by input.

# Rules read input directly rather than through aliases, and the steps
# are literal objects rather than function results: every virtual document
# and function call costs microseconds in the evaluator.

transactional if input.request.transactional == true

low_priority if input.request.priority < input.config.priority_threshold

# ---- quiet hours --------------------------------------------------------

minute_ns := 60000000000

day_ns := 86400000000000

# A window inside one day (e.g. 12:00-14:00) or across midnight (21:00-08:00).
in_quiet if {
	not transactional
	input.config.quiet_hours == true
	input.config.quiet_start_minute < input.config.quiet_end_minute
	input.time.local.minute_of_day >= input.config.quiet_start_minute
	input.time.local.minute_of_day < input.config.quiet_end_minute
}

in_quiet if {
	not transactional
	input.config.quiet_hours == true
	input.config.quiet_start_minute > input.config.quiet_end_minute
	input.time.local.minute_of_day >= input.config.quiet_start_minute
}

in_quiet if {
	not transactional
	input.config.quiet_hours == true
	input.config.quiet_start_minute > input.config.quiet_end_minute
	input.time.local.minute_of_day < input.config.quiet_end_minute
}

# The quiet period ends today, or tomorrow when it started this evening.
quiet_end_day := 1 if {
	input.config.quiet_start_minute > input.config.quiet_end_minute
	input.time.local.minute_of_day >= input.config.quiet_start_minute
} else := 0

wall_layout := "2006-01-02T15:04:05"

# offset_ns(t) is the user's zone's UTC offset at the instant t.
offset_ns(t) := time.parse_ns(wall_layout, time.format([t, input.time.timezone, wall_layout])) - t

# local_to_ns(w) is the instant whose wall clock in the user's zone reads
# w (a wall time written as if it were UTC). Two rounds of the offset make
# it right on both sides of a daylight-saving change.
local_to_ns(w) := w - offset_ns(w - offset_ns(w))

defer_until := local_to_ns(((time.parse_ns("2006-01-02", input.time.local.date) + (quiet_end_day * day_ns)) + (input.config.quiet_end_minute * minute_ns))) if in_quiet

# ---- caps ---------------------------------------------------------------

# The cap this campaign may fill: 0 when there is none, lowered by the
# headroom (never below 1) for low priority.
day_limit := 0 if {
	input.config.per_day <= 0
} else := input.config.per_day if {
	not low_priority
} else := max([input.config.per_day - input.config.priority_headroom, 1])

week_limit := 0 if {
	input.config.per_week <= 0
} else := input.config.per_week if {
	not low_priority
} else := max([input.config.per_week - input.config.priority_headroom, 1])

week_rule := "weekly_cap" if {
	week_limit > 0
	input.counters.week >= input.config.per_week
} else := "priority_headroom" if {
	week_limit > 0
	input.counters.week >= week_limit
}

day_rule := "daily_cap" if {
	day_limit > 0
	input.counters.day >= input.config.per_day
} else := "priority_headroom" if {
	day_limit > 0
	input.counters.day >= day_limit
}

# ---- minimum gap --------------------------------------------------------

gap := 0 if {
	transactional
} else := input.config.min_gap_ns

too_close if {
	gap > 0
	input.time.send_at_ns - input.counters.previous_ns < gap
}

too_close if {
	gap > 0
	input.counters.next_ns - input.time.send_at_ns < gap
}

# ---- decision -----------------------------------------------------------

denial := week_rule if {
	week_rule
} else := day_rule if {
	day_rule
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

transactional_result := "bypass caps, quiet hours and gap" if {
	transactional
} else := "no: guardrails apply"

quiet_result := "bypassed" if {
	transactional
} else := "deferred to the end of quiet hours" if {
	in_quiet
} else := "not applicable to this channel" if {
	input.config.quiet_hours != true
} else := "outside quiet hours"

quiet_inputs := {
	"send_at": input.time.local.text,
	"timezone": input.time.timezone,
	"quiet_start": input.config.quiet_start,
	"quiet_end": input.config.quiet_end,
	"defer_until": time.format([defer_until, input.time.timezone, "2006-01-02 15:04 MST"]),
} if {
	in_quiet
} else := {
	"send_at": input.time.local.text,
	"timezone": input.time.timezone,
	"quiet_start": input.config.quiet_start,
	"quiet_end": input.config.quiet_end,
}

# later is the result of the checks that wait for the deferred time.
later := "bypassed" if {
	transactional
} else := "checked at the deferred time" if {
	in_quiet
}

week_result := later if {
	later
} else := "no cap" if {
	week_limit == 0
} else := "capped" if {
	week_rule == "weekly_cap"
} else := "reserved for higher priority" if {
	week_rule
} else := "ok"

day_result := later if {
	later
} else := "no cap" if {
	day_limit == 0
} else := "capped" if {
	day_rule == "daily_cap"
} else := "reserved for higher priority" if {
	day_rule
} else := "ok"

gap_result := later if {
	later
} else := "no minimum gap" if {
	gap == 0
} else := "too close to another message" if {
	too_close
} else := "ok"

steps := [
	{"name": "transactional", "result": transactional_result, "inputs": {"transactional": transactional_input}},
	{"name": "quiet_hours", "result": quiet_result, "inputs": quiet_inputs},
	{"name": "weekly_cap", "result": week_result, "inputs": {
		"channel": input.request.channel,
		"sent": input.counters.week,
		"cap": input.config.per_week,
		"limit_for_priority": week_limit,
		"priority": input.request.priority,
		"priority_threshold": input.config.priority_threshold,
	}},
	{"name": "daily_cap", "result": day_result, "inputs": {
		"channel": input.request.channel,
		"sent": input.counters.day,
		"cap": input.config.per_day,
		"limit_for_priority": day_limit,
		"priority": input.request.priority,
		"priority_threshold": input.config.priority_threshold,
	}},
	{"name": "min_gap", "result": gap_result, "inputs": {
		"min_gap_minutes": gap / minute_ns,
		"previous": object.get(input.counters, "previous_text", "none"),
		"next": object.get(input.counters, "next_text", "none"),
	}},
]

transactional_input := true if {
	transactional
} else := false
