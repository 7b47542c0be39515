package loadgen

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// CPUMeter reads the CPU time each process it watches has used so far, by
// a name for the report ("whisper dev", "redis-server"). A process it cannot
// read is left out.
type CPUMeter func() map[string]time.Duration

// CPUUse is the CPU time each process used during a measured window, in
// microseconds per unit of work (event or record), by process name.
type CPUUse map[string]float64

// Total is the CPU time of all the processes together per unit.
func (u CPUUse) Total() float64 {
	var t float64
	for _, v := range u {
		t += v
	}
	return t
}

// String lists the processes by name and their total: "redis-server 2.9 µs,
// whisper dev 8.1 µs: 11.0 µs".
func (u CPUUse) String() string {
	parts := make([]string, 0, len(u))
	for _, k := range slices.Sorted(maps.Keys(u)) {
		parts = append(parts, fmt.Sprintf("%s %.1f µs", k, u[k]))
	}
	return fmt.Sprintf("%s: %.1f µs", strings.Join(parts, ", "), u.Total())
}

// per divides u by units; nil when there are none.
func (u CPUUse) per(units int64) CPUUse {
	if u == nil || units <= 0 {
		return nil
	}
	per := make(CPUUse, len(u))
	for k, v := range u {
		per[k] = v / float64(units)
	}
	return per
}

// cpuSince reads meter now and returns a function that reads it again and
// returns the microseconds each process used in between; processes read
// only once are left out. A nil meter measures nothing.
func cpuSince(meter CPUMeter) func() CPUUse {
	if meter == nil {
		return func() CPUUse { return nil }
	}
	before := meter()
	return func() CPUUse {
		after := meter()
		use := CPUUse{}
		for k, b := range before {
			if a, ok := after[k]; ok {
				use[k] = float64((a - b).Microseconds())
			}
		}
		return use
	}
}

// cpuWindow reads meter at start and at end, sleeping until each, and
// returns a function that waits for the second reading and gives the CPU
// time used in between per unit; it measures nothing when ctx ended first.
func cpuWindow(ctx context.Context, meter CPUMeter, start, end time.Time) func(units int64) CPUUse {
	done := make(chan CPUUse, 1)
	go func() {
		var use CPUUse
		defer func() { done <- use }()
		if meter == nil || sleepCtx(ctx, time.Until(start)) != nil {
			return
		}
		since := cpuSince(meter)
		if sleepCtx(ctx, time.Until(end)) != nil {
			return
		}
		use = since()
	}()
	return func(units int64) CPUUse { return (<-done).per(units) }
}
