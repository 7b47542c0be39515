package contact

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidConfig wraps every reason New refuses a Config.
var ErrInvalidConfig = errors.New("invalid contact policy config")

// ChannelRules are the guardrails of one channel.
type ChannelRules struct {
	// PerDay and PerWeek cap the messages a user gets on the channel per
	// local day and per ISO week (Monday to Sunday, local), across all
	// campaigns. 0 means no cap.
	PerDay, PerWeek int
	// QuietHours: messages on the channel wait for the end of quiet hours.
	QuietHours bool
	// MinGap: messages on the channel keep Rules.MinGap from every other
	// message of a MinGap channel, whatever its channel.
	MinGap bool
}

// Rules are one workspace's guardrails.
type Rules struct {
	// Channels holds the rules per channel name ("email", "sms", "push",
	// "webhook", "in_app"; a proto enum name such as CHANNEL_EMAIL is
	// accepted too). A channel not listed gets OtherChannels.
	Channels      map[string]ChannelRules
	OtherChannels ChannelRules
	// QuietStart and QuietEnd bound the quiet hours, "HH:MM" in the user's
	// timezone. The window may cross midnight (21:00 to 08:00); equal
	// values mean no quiet hours.
	QuietStart, QuietEnd string
	// MinGap is the least time between two messages to one user; 0 is none.
	MinGap time.Duration
	// PriorityHeadroom is how many of the last slots of every cap are kept
	// for campaigns with priority >= PriorityThreshold. A cap is never
	// lowered below 1 this way, so a cap of 1 is open to every campaign.
	PriorityThreshold int
	PriorityHeadroom  int
}

// DefaultRules are the guardrails of a workspace without overrides: at most
// 2 emails a day and 7 a week, 1 SMS a day and 3 a week, 3 pushes a day and
// 10 a week, 5 in-app messages a day and 20 a week, webhooks unlimited;
// quiet hours 21:00 to 08:00 for email, SMS and push, which also keep an
// hour between each other; the last slot of every cap kept for campaigns
// of priority 80 or more.
func DefaultRules() Rules {
	interrupting := func(day, week int) ChannelRules {
		return ChannelRules{PerDay: day, PerWeek: week, QuietHours: true, MinGap: true}
	}
	return Rules{
		Channels: map[string]ChannelRules{
			"email":   interrupting(2, 7),
			"sms":     interrupting(1, 3),
			"push":    interrupting(3, 10),
			"in_app":  {PerDay: 5, PerWeek: 20},
			"webhook": {},
		},
		OtherChannels:     interrupting(2, 7),
		QuietStart:        "21:00",
		QuietEnd:          "08:00",
		MinGap:            time.Hour,
		PriorityThreshold: 80,
		PriorityHeadroom:  1,
	}
}

// Config is the policy's configuration.
type Config struct {
	// Rules apply to every workspace without an override. The zero value
	// means DefaultRules().
	Rules Rules
	// Workspaces overrides Rules per workspace id. An override replaces the
	// rules whole (start from DefaultRules() to change one field).
	Workspaces map[string]Rules
}

func (r Rules) isZero() bool {
	return r.Channels == nil && r.OtherChannels == (ChannelRules{}) && r.QuietStart == "" && r.QuietEnd == "" &&
		r.MinGap == 0 && r.PriorityThreshold == 0 && r.PriorityHeadroom == 0
}

// channel normalises a channel name: "CHANNEL_IN_APP" and "In_App" are
// "in_app".
func channel(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	return strings.TrimPrefix(n, "channel_")
}

// forChannel returns the rules of a normalised channel name.
func (r Rules) forChannel(ch string) ChannelRules {
	if c, ok := r.Channels[ch]; ok {
		return c
	}
	return r.OtherChannels
}

// parseClock reads "HH:MM".
func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(h) != 2 || len(m) != 2 || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("%q is not a time of day HH:MM", s)
	}
	return hh*60 + mm, nil
}

func (r Rules) validate(field string) error {
	bad := func(f string, format string, args ...any) error {
		return fmt.Errorf("%w: %s.%s: %s", ErrInvalidConfig, field, f, fmt.Sprintf(format, args...))
	}
	if _, err := parseClock(r.QuietStart); err != nil {
		return bad("quiet_start", "%v", err)
	}
	if _, err := parseClock(r.QuietEnd); err != nil {
		return bad("quiet_end", "%v", err)
	}
	if r.MinGap < 0 {
		return bad("min_gap", "%s is negative", r.MinGap)
	}
	if r.PriorityThreshold < 0 || r.PriorityThreshold > 101 {
		return bad("priority_threshold", "%d is not in 0..101", r.PriorityThreshold)
	}
	if r.PriorityHeadroom < 0 {
		return bad("priority_headroom", "%d is negative", r.PriorityHeadroom)
	}
	check := func(name string, c ChannelRules) error {
		if c.PerDay < 0 {
			return bad(name+".per_day", "%d is negative", c.PerDay)
		}
		if c.PerWeek < 0 {
			return bad(name+".per_week", "%d is negative", c.PerWeek)
		}
		return nil
	}
	names := make([]string, 0, len(r.Channels))
	for n := range r.Channels {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n != channel(n) || n == "" {
			return bad("channels["+n+"]", "channel names are lower case without a CHANNEL_ prefix")
		}
		if err := check("channels["+n+"]", r.Channels[n]); err != nil {
			return err
		}
	}
	return check("other_channels", r.OtherChannels)
}

// resolve fills in defaults and validates c.
func (c Config) resolve() (Config, error) {
	if c.Rules.isZero() {
		c.Rules = DefaultRules()
	}
	if err := c.Rules.validate("rules"); err != nil {
		return Config{}, err
	}
	for ws, r := range c.Workspaces {
		if err := r.validate("workspaces[" + ws + "]"); err != nil {
			return Config{}, err
		}
	}
	return c, nil
}

func (c Config) rulesFor(ws string) Rules {
	if r, ok := c.Workspaces[ws]; ok {
		return r
	}
	return c.Rules
}
