package content

import (
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
)

// scope builds the variables a template sees. Every value is a plain Go
// map, slice, string, number, bool or time, so Liquid's filters and
// comparisons work on them as on JSON.
func scope(p *profilev1.Profile, event *structpb.Struct, c *contentv1.Campaign, locale string) map[string]any {
	traits := p.GetTraits().AsMap()
	counts := make(map[string]any, len(p.GetEventCounts()))
	for k, v := range p.GetEventCounts() {
		counts[k] = v
	}
	lastTimes := make(map[string]any, len(p.GetLastEventTimes()))
	for k, v := range p.GetLastEventTimes() {
		lastTimes[k] = v.AsTime()
	}
	rolling := make(map[string]any, len(p.GetRollingCounts()))
	for k, v := range p.GetRollingCounts() {
		rolling[k] = map[string]any{"last_1d": v.GetLast_1D(), "last_7d": v.GetLast_7D(), "last_28d": v.GetLast_28D()}
	}
	profile := map[string]any{
		"workspace_id":     p.GetWorkspaceId(),
		"profile_id":       p.GetProfileId(),
		"user_id":          p.GetUserId(),
		"anonymous_ids":    p.GetAnonymousIds(),
		"traits":           traits,
		"event_counts":     counts,
		"last_event_times": lastTimes,
		"rolling_counts":   rolling,
		"stage":            p.GetStage(),
		"engagement_score": p.GetEngagementScore(),
		"churn_risk":       p.GetChurnRisk(),
	}
	for k, ts := range map[string]*timestamppb.Timestamp{
		"first_seen_time": p.GetFirstSeenTime(), "last_seen_time": p.GetLastSeenTime(),
		"stage_time": p.GetStageTime(), "update_time": p.GetUpdateTime(),
	} {
		if ts != nil {
			profile[k] = ts.AsTime()
		}
	}
	return map[string]any{
		"profile":  profile,
		"user":     traits,
		"event":    event.AsMap(),
		"campaign": map[string]any{"id": c.GetId(), "name": c.GetName()},
		"locale":   locale,
	}
}

// lookup resolves a dotted path such as "profile.traits.first_name" in
// vars; ok is false when any step is missing or the value is nil.
func lookup(vars map[string]any, path string) (any, bool) {
	var cur any = vars
	for seg := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok || cur == nil {
			return nil, false
		}
	}
	return cur, true
}
