package whisper.engagement.contact_test

import data.whisper.engagement.contact

hour_ns := 3600000000000

config := {
	"per_day": 2,
	"per_week": 5,
	"quiet_hours": true,
	"quiet_start": "21:00",
	"quiet_end": "08:00",
	"min_gap_ns": hour_ns,
	"priority_threshold": 80,
	"priority_headroom": 0,
}

request := {"channel": "email", "campaign_id": "c1", "priority": 50, "transactional": false}

no_counters := {"day": 0, "week": 0}

# minutes("HH:MM") is the minute of the day.
minutes(hhmm) := (to_number(p[0]) * 60) + to_number(p[1]) if p := split(hhmm, ":")

# at builds the input the Go caller builds: the send time in the user's
# zone, its local date and minute of the day, the quiet hours in minutes,
# the neighbouring messages as local times.
at(rfc3339, tz, req, counters, cfg) := {
	"request": object.union(request, req),
	"time": {
		"send_at_ns": t,
		"timezone": tz,
		"local": {
			"date": time.format([t, tz, "2006-01-02"]),
			"minute_of_day": (clock[0] * 60) + clock[1],
			"text": time.format([t, tz, "2006-01-02 15:04 MST"]),
		},
	},
	"counters": object.union(object.union(no_counters, counters), texts),
	"config": object.union(c, {
		"quiet_start_minute": minutes(c.quiet_start),
		"quiet_end_minute": minutes(c.quiet_end),
	}),
} if {
	t := time.parse_rfc3339_ns(rfc3339)
	clock := time.clock([t, tz])
	c := object.union(config, cfg)
	texts := {sprintf("%s_text", [k]): time.format([counters[sprintf("%s_ns", [k])], tz, "2006-01-02 15:04 MST"]) |
		some k in ["previous", "next"]
		counters[sprintf("%s_ns", [k])]
	}
}

decide(rfc3339, tz, req, counters, cfg) := d if {
	d := contact.decision with input as at(rfc3339, tz, req, counters, cfg)
}

# ---- caps -----------------------------------------------------------------

test_allows_within_caps if {
	d := decide("2026-06-10T10:00:00Z", "UTC", {}, {"day": 1, "week": 4}, {})
	d.allow
	d.rule == ""
	d.limits == {"day": 2, "week": 5, "min_gap_ns": hour_ns}
	not d.defer_until_ns
}

test_daily_cap if {
	d := decide("2026-06-10T10:00:00Z", "UTC", {}, {"day": 2, "week": 2}, {})
	not d.allow
	d.rule == "daily_cap"
}

test_weekly_cap if {
	d := decide("2026-06-10T10:00:00Z", "UTC", {}, {"day": 0, "week": 5}, {})
	not d.allow
	d.rule == "weekly_cap"
}

test_weekly_cap_reported_before_daily if {
	d := decide("2026-06-10T10:00:00Z", "UTC", {}, {"day": 2, "week": 5}, {})
	d.rule == "weekly_cap"
}

test_no_cap_when_zero if {
	d := decide("2026-06-10T10:00:00Z", "UTC", {}, {"day": 40, "week": 400}, {"per_day": 0, "per_week": 0})
	d.allow
	d.limits.day == 0
	d.limits.week == 0
}

# ---- priority headroom ----------------------------------------------------

test_last_slot_is_kept_for_high_priority if {
	cfg := {"per_day": 3, "priority_headroom": 1}
	low := decide("2026-06-10T10:00:00Z", "UTC", {"priority": 79}, {"day": 2}, cfg)
	not low.allow
	low.rule == "priority_headroom"
	low.limits.day == 2
	high := decide("2026-06-10T10:00:00Z", "UTC", {"priority": 80}, {"day": 2}, cfg)
	high.allow
	high.limits.day == 3
	full := decide("2026-06-10T10:00:00Z", "UTC", {"priority": 100}, {"day": 3}, cfg)
	full.rule == "daily_cap"
}

test_headroom_applies_to_the_week if {
	low := decide("2026-06-10T10:00:00Z", "UTC", {"priority": 0}, {"week": 4}, {"priority_headroom": 1})
	low.rule == "priority_headroom"
	low.limits.week == 4
}

test_headroom_never_closes_a_cap if {
	d := decide("2026-06-10T10:00:00Z", "UTC", {"priority": 0}, {}, {"per_day": 1, "priority_headroom": 5})
	d.allow
	d.limits.day == 1
}

# ---- quiet hours ----------------------------------------------------------

test_quiet_evening_defers_to_next_morning if {
	# 22:30 in Paris (UTC+1 in November).
	d := decide("2026-11-27T21:30:00Z", "Europe/Paris", {}, {}, {})
	d.allow
	d.rule == "quiet_hours"
	d.defer_until_ns == time.parse_rfc3339_ns("2026-11-28T08:00:00+01:00")
}

test_quiet_early_morning_defers_to_same_morning if {
	# 06:00 in Tokyo.
	d := decide("2026-11-26T21:00:00Z", "Asia/Tokyo", {}, {}, {})
	d.rule == "quiet_hours"
	d.defer_until_ns == time.parse_rfc3339_ns("2026-11-27T08:00:00+09:00")
}

test_quiet_boundaries if {
	# 21:00 sharp is quiet, 08:00 sharp and 20:59 are not.
	decide("2026-06-10T21:00:00Z", "UTC", {}, {}, {}).rule == "quiet_hours"
	decide("2026-06-10T08:00:00Z", "UTC", {}, {}, {}).rule == ""
	decide("2026-06-10T20:59:00Z", "UTC", {}, {}, {}).rule == ""
}

test_quiet_across_spring_forward if {
	# 23:00 EST on 7 March 2026; clocks jump to EDT at 02:00, so 08:00 the
	# next morning is 12:00 UTC, not 13:00.
	d := decide("2026-03-08T04:00:00Z", "America/New_York", {}, {}, {})
	d.rule == "quiet_hours"
	d.defer_until_ns == time.parse_rfc3339_ns("2026-03-08T12:00:00Z")
}

test_quiet_across_fall_back if {
	# 22:00 EDT on 31 October 2026; clocks go back to EST at 02:00, so
	# 08:00 the next morning is 13:00 UTC.
	d := decide("2026-11-01T02:00:00Z", "America/New_York", {}, {}, {})
	d.rule == "quiet_hours"
	d.defer_until_ns == time.parse_rfc3339_ns("2026-11-01T13:00:00Z")
}

test_quiet_in_a_half_hour_zone if {
	# 23:15 in Kolkata (UTC+5:30).
	d := decide("2026-06-10T17:45:00Z", "Asia/Kolkata", {}, {}, {})
	d.defer_until_ns == time.parse_rfc3339_ns("2026-06-11T08:00:00+05:30")
}

test_quiet_window_within_a_day if {
	cfg := {"quiet_start": "12:00", "quiet_end": "14:00"}
	d := decide("2026-06-10T12:30:00Z", "UTC", {}, {}, cfg)
	d.defer_until_ns == time.parse_rfc3339_ns("2026-06-10T14:00:00Z")
	decide("2026-06-10T23:30:00Z", "UTC", {}, {}, cfg).rule == ""
}

test_quiet_hours_off_for_the_channel if {
	d := decide("2026-06-10T23:30:00Z", "UTC", {"channel": "in_app"}, {}, {"quiet_hours": false})
	d.allow
	d.rule == ""
}

test_equal_start_and_end_means_no_quiet_hours if {
	decide("2026-06-10T23:30:00Z", "UTC", {}, {}, {"quiet_start": "00:00", "quiet_end": "00:00"}).rule == ""
}

test_quiet_hours_defer_before_caps if {
	# Today's cap is irrelevant: the caller checks the caps of the day the
	# message is deferred to.
	d := decide("2026-06-10T23:30:00Z", "UTC", {}, {"day": 2}, {})
	d.allow
	d.rule == "quiet_hours"
}

# ---- minimum gap ----------------------------------------------------------

test_min_gap if {
	t := time.parse_rfc3339_ns("2026-06-10T10:00:00Z")
	after := decide("2026-06-10T10:00:00Z", "UTC", {}, {"previous_ns": t - (hour_ns / 2)}, {})
	not after.allow
	after.rule == "min_gap"
	before := decide("2026-06-10T10:00:00Z", "UTC", {}, {"next_ns": t + (hour_ns / 2)}, {})
	before.rule == "min_gap"
	ok := decide("2026-06-10T10:00:00Z", "UTC", {}, {"previous_ns": t - hour_ns, "next_ns": t + hour_ns}, {})
	ok.allow
	ok.rule == ""
}

test_no_min_gap_when_zero if {
	t := time.parse_rfc3339_ns("2026-06-10T10:00:00Z")
	d := decide("2026-06-10T10:00:00Z", "UTC", {}, {"previous_ns": t}, {"min_gap_ns": 0})
	d.allow
	d.limits.min_gap_ns == 0
}

# ---- transactional --------------------------------------------------------

test_transactional_bypasses_everything if {
	t := time.parse_rfc3339_ns("2026-06-10T23:30:00Z")
	d := decide("2026-06-10T23:30:00Z", "UTC", {"transactional": true, "priority": 0}, {"day": 9, "week": 99, "previous_ns": t}, {})
	d.allow
	d.rule == ""
	not d.defer_until_ns
	d.limits == {"day": 0, "week": 0, "min_gap_ns": 0}
}

# ---- explanation ----------------------------------------------------------

test_steps_explain_every_rule if {
	d := decide("2026-06-10T10:00:00Z", "Europe/Paris", {}, {"day": 1, "week": 3}, {})
	[s.name | some s in d.steps] == ["transactional", "quiet_hours", "weekly_cap", "daily_cap", "min_gap"]
	d.steps[1].result == "outside quiet hours"
	d.steps[1].inputs.send_at == "2026-06-10 12:00 CEST"
	d.steps[2].result == "ok"
	d.steps[2].inputs.sent == 3
	d.steps[3].result == "ok"
	d.steps[3].inputs == {"channel": "email", "sent": 1, "cap": 2, "limit_for_priority": 2, "priority": 50, "priority_threshold": 80}
	d.steps[4].inputs == {"min_gap_minutes": 60, "previous": "none", "next": "none"}
}

test_steps_name_the_deferral if {
	d := decide("2026-11-27T21:30:00Z", "Europe/Paris", {}, {}, {})
	d.steps[1].result == "deferred to the end of quiet hours"
	d.steps[1].inputs.defer_until == "2026-11-28 08:00 CET"
	d.steps[2].result == "checked at the deferred time"
}

test_steps_say_why_headroom_denied if {
	d := decide("2026-06-10T10:00:00Z", "UTC", {"priority": 10}, {"day": 1}, {"priority_headroom": 1})
	d.steps[3].result == "reserved for higher priority"
	d.steps[3].inputs.limit_for_priority == 1
}

test_steps_show_the_neighbouring_messages if {
	t := time.parse_rfc3339_ns("2026-06-10T10:00:00Z")
	d := decide("2026-06-10T10:00:00Z", "UTC", {}, {"previous_ns": t - (hour_ns / 2)}, {})
	d.steps[4].result == "too close to another message"
	d.steps[4].inputs.previous == "2026-06-10 09:30 UTC"
	d.steps[4].inputs.next == "none"
}

# The Go caller renders step inputs with fmt: only scalars are allowed.
test_every_step_input_is_a_scalar if {
	decisions := [
		decide("2026-06-10T10:00:00Z", "UTC", {}, {"previous_ns": 1}, {}),
		decide("2026-06-10T23:00:00Z", "UTC", {}, {}, {}),
		decide("2026-06-10T23:00:00Z", "UTC", {"transactional": true}, {}, {}),
	]
	count(decisions) == 3
	every d in decisions {
		every s in d.steps {
			every _, v in s.inputs {
				type_name(v) in {"string", "number", "boolean"}
			}
		}
	}
}
