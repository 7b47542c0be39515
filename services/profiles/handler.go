package profiles

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/profile/v1/profilev1connect"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// Handler serves ProfileService. It expects every request to carry an
// *auth.Principal, as attached by authn middleware running
// auth.Authenticator.AuthenticateBearer, and refuses requests without one.
type Handler struct {
	store   *Store
	filters *filters
	// scanBudget is how many profiles a filtered ListProfiles call scans
	// at most: filterScanBudget, but for tests.
	scanBudget int
	logger     *slog.Logger
}

var _ profilev1connect.ProfileServiceHandler = (*Handler)(nil)

// NewHandler returns a Handler reading store.
func NewHandler(store *Store, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f, err := newFilters()
	if err != nil {
		// The environment is fixed at build time: this is a programming error.
		panic(err)
	}
	return &Handler{store: store, filters: f, scanBudget: filterScanBudget, logger: logger}
}

// Routes returns the path and handler to mount (behind bearer authn).
func (h *Handler) Routes(opts ...connect.HandlerOption) (string, http.Handler) {
	return profilev1connect.NewProfileServiceHandler(h, opts...)
}

// GetProfile returns the profile an identity is linked to.
func (h *Handler) GetProfile(ctx context.Context, req *profilev1.GetProfileRequest) (*profilev1.GetProfileResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	var kind, id, field string
	switch v := req.GetId().(type) {
	case *profilev1.GetProfileRequest_UserId:
		kind, id, field = kindUser, v.UserId, "user_id"
	case *profilev1.GetProfileRequest_AnonymousId:
		kind, id, field = kindAnonymous, v.AnonymousId, "anonymous_id"
	default:
		return nil, invalid("id", "set user_id or anonymous_id")
	}
	if id == "" || len(id) > maxIDBytes {
		return nil, invalid(field, "must be 1-512 bytes")
	}
	p, err := h.store.get(ctx, ws, kind, id)
	if errors.Is(err, ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no profile has this "+field))
	}
	if err != nil {
		return nil, h.internal(ctx, "get profile", err)
	}
	pb, err := toProto(p)
	if err != nil {
		return nil, h.internal(ctx, "get profile", err)
	}
	return &profilev1.GetProfileResponse{Profile: pb}, nil
}

// ListProfiles pages through a workspace's profiles by profile id, keeping
// only those the request's CEL filter matches, if it has one.
func (h *Handler) ListProfiles(ctx context.Context, req *profilev1.ListProfilesRequest) (*profilev1.ListProfilesResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxPageSize:
		return nil, invalid("page_size", "must be 0-1000")
	case size == 0:
		size = defaultPageSize
	}
	after := uuid.Nil.String()
	if t := req.GetPageToken(); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || len(b) != 17 || b[0] != pageTokenVersion {
			return nil, invalid("page_token", "not a page token from a previous response")
		}
		after = uuid.UUID(b[1:]).String()
	}
	if req.GetFilter() != "" {
		return h.listFiltered(ctx, ws, after, size, req.GetFilter())
	}
	ps, err := h.store.list(ctx, ws, after, size+1)
	if err != nil {
		return nil, h.internal(ctx, "list profiles", err)
	}
	resp := &profilev1.ListProfilesResponse{}
	if len(ps) > size {
		ps = ps[:size]
		resp.NextPageToken = pageToken(ps[size-1].ProfileID)
	}
	for _, p := range ps {
		pb, err := toProto(p)
		if err != nil {
			return nil, h.internal(ctx, "list profiles", err)
		}
		resp.Profiles = append(resp.Profiles, pb)
	}
	return resp, nil
}

// listFiltered scans ws's profiles after id after, in id order, until size
// of them match filter, the scan budget is spent or the time budget runs
// out; the page token resumes after the last profile scanned.
func (h *Handler) listFiltered(ctx context.Context, ws, after string, size int, filter string) (*profilev1.ListProfilesResponse, error) {
	prg, err := h.filters.compile(filter)
	if err != nil {
		return nil, invalid("filter", err.Error())
	}
	evalCtx, cancel := context.WithTimeout(ctx, filterTimeBudget)
	defer cancel()
	resp := &profilev1.ListProfilesResponse{}
	scanned := 0
	for scanned < h.scanBudget {
		chunk := min(filterScanChunk, h.scanBudget-scanned)
		ps, err := h.store.list(ctx, ws, after, chunk)
		if err != nil {
			return nil, h.internal(ctx, "list profiles", err)
		}
		for i, p := range ps {
			pb, err := toProto(p)
			if err != nil {
				return nil, h.internal(ctx, "list profiles", err)
			}
			ok, err := match(evalCtx, prg, pb)
			switch {
			case errors.Is(err, errFilterCost):
				return nil, invalid("filter", err.Error())
			case err != nil && ctx.Err() != nil:
				return nil, connect.NewError(connect.CodeOf(ctx.Err()), ctx.Err())
			case err != nil:
				// The time budget ran out: resume at this profile.
				if scanned == 0 {
					return nil, connect.NewError(connect.CodeDeadlineExceeded, errors.New("filter: evaluating one profile took longer than the time budget"))
				}
				resp.NextPageToken = pageToken(after)
				return resp, nil
			}
			scanned++
			after = p.ProfileID
			if ok {
				resp.Profiles = append(resp.Profiles, pb)
			}
			if len(resp.Profiles) == size {
				if i < len(ps)-1 || len(ps) == chunk {
					resp.NextPageToken = pageToken(after)
				}
				return resp, nil
			}
		}
		if len(ps) < chunk {
			return resp, nil // the end of the workspace's profiles
		}
	}
	resp.NextPageToken = pageToken(after)
	return resp, nil
}

// pageToken resumes a listing after profile id.
func pageToken(id string) string {
	u := uuid.MustParse(id)
	return base64.RawURLEncoding.EncodeToString(append([]byte{pageTokenVersion}, u[:]...))
}

const pageTokenVersion = 1

func invalid(field, problem string) error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(field+": "+problem))
}

func (h *Handler) internal(ctx context.Context, what string, err error) error {
	h.logger.ErrorContext(ctx, what, "err", err)
	return connect.NewError(connect.CodeInternal, errors.New(what+" failed"))
}

func toProto(p Profile) (*profilev1.Profile, error) {
	traits := &structpb.Struct{}
	if err := protojson.Unmarshal(p.Traits, traits); err != nil {
		return nil, err
	}
	out := &profilev1.Profile{
		WorkspaceId:      p.WorkspaceID,
		ProfileId:        p.ProfileID,
		UserId:           p.UserID,
		AnonymousIds:     slices.Clone(p.AnonymousIDs),
		Traits:           traits,
		FirstSeenTime:    timestamppb.New(p.FirstSeen),
		LastSeenTime:     timestamppb.New(p.LastSeen),
		EventCounts:      p.EventCounts,
		LastEventTimes:   make(map[string]*timestamppb.Timestamp, len(p.LastEventTimes)),
		UpdateTime:       timestamppb.New(p.UpdatedAt),
		SessionCount:     p.SessionCount,
		SessionStartTime: timestamppb.New(p.SessionStart),
	}
	for name, us := range p.LastEventTimes {
		out.LastEventTimes[name] = timestamppb.New(time.UnixMicro(us))
	}
	if p.StageTime != nil {
		// Rows written before lifecycles existed have none until their
		// next change.
		out.Stage = p.Stage
		out.StageTime = timestamppb.New(*p.StageTime)
		out.EngagementScore = p.EngagementScore
		out.ChurnRisk = p.ChurnRisk
		in := p.Inputs
		out.ScoreInputs = &profilev1.ScoreInputs{
			ComputedTime:       timestamppb.New(time.UnixMicro(in.ComputedMicros)),
			DaysSinceLastSeen:  in.DaysSinceLastSeen,
			DaysSinceFirstSeen: in.DaysSinceFirst,
			ActiveDays_7D:      in.ActiveDays7d,
			ActiveDays_28D:     in.ActiveDays28d,
			Events_7D:          in.Events7d,
			Events_28D:         in.Events28d,
			Trend:              in.Trend,
			Activated:          in.Activated,
		}
	}
	if w := p.Daily.windows(p.UpdatedAt.UnixMicro()); len(w) > 0 {
		out.RollingCounts = make(map[string]*profilev1.WindowCounts, len(w))
		for name, c := range w {
			out.RollingCounts[name] = &profilev1.WindowCounts{Last_1D: c.d1, Last_7D: c.d7, Last_28D: c.d28}
		}
	}
	return out, nil
}
