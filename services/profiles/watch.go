package profiles

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/whisperhq/whisper/internal/auth"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
)

// maxFollow bounds how many merges in a row one re-read follows before it
// gives up for this wake-up.
const maxFollow = 8

// WatchProfile sends the profile an identity is linked to, then its new
// state after every change, until the client goes away.
//
// Changes are learnt from this process's consumer only (through the
// Store's hub): with several replicas of the profiles target, a change
// applied by another replica is not seen until this replica's consumer
// changes the profile too. On every wake-up the identity is resolved again,
// so a stream whose profile an alias merged away follows the survivor.
func (h *Handler) WatchProfile(ctx context.Context, req *profilev1.WatchProfileRequest, stream *connect.ServerStream[profilev1.WatchProfileResponse]) error {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return err
	}
	var kind, id, field string
	switch v := req.GetId().(type) {
	case *profilev1.WatchProfileRequest_UserId:
		kind, id, field = kindUser, v.UserId, "user_id"
	case *profilev1.WatchProfileRequest_AnonymousId:
		kind, id, field = kindAnonymous, v.AnonymousId, "anonymous_id"
	default:
		return invalid("id", "set user_id or anonymous_id")
	}
	if id == "" || len(id) > maxIDBytes {
		return invalid(field, "must be 1-512 bytes")
	}

	// Subscribe before the first read, so that no change after it is lost.
	sub := h.store.hub.subscribe(ws)
	defer sub.close()
	var watched string
	// read resolves the identity and returns its profile, watching it; a
	// profile id that changed is read again once watched, for a change
	// between the read and the watch would go unseen.
	read := func() (*profilev1.Profile, error) {
		for range maxFollow {
			p, err := h.store.get(ctx, ws, kind, id)
			if err != nil {
				return nil, err
			}
			if p.ProfileID != watched {
				watched = p.ProfileID
				sub.watch(watched)
				continue
			}
			return toProto(p)
		}
		return nil, fmt.Errorf("identity %s %q moved between profiles %d times in a row", kind, id, maxFollow)
	}

	var last *profilev1.Profile
	for {
		p, err := read()
		switch {
		case ctx.Err() != nil:
			return ctx.Err() // the client went away, or its deadline passed
		case errors.Is(err, ErrNotFound):
			return connect.NewError(connect.CodeNotFound, errors.New("no profile has this "+field))
		case err != nil:
			return h.internal(ctx, "watch profile", err)
		}
		if !proto.Equal(p, last) {
			if err := stream.Send(&profilev1.WatchProfileResponse{Profile: p}); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("send profile: %w", err)
			}
			last = p
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.C:
		}
	}
}
