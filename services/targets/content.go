package targets

import (
	"context"
	"fmt"
	"log/slog"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/whisperhq/whisper/internal/auth"
	"github.com/whisperhq/whisper/internal/gen/whisper/content/v1/contentv1connect"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/rpc"
	"github.com/whisperhq/whisper/services/content"
	"github.com/whisperhq/whisper/services/profiles"
)

// startContent mounts ContentService. Renders for a user id read the
// profile from the profiles tables (migrated here too, so the content
// target runs on its own), through the profiles handler in process.
func startContent(ctx context.Context, cfg Config, pool *pgxpool.Pool, srv *rpc.Server, reg prometheus.Registerer,
	authenticator *auth.Authenticator, logger *slog.Logger, handlerOpts []connect.HandlerOption,
) error {
	if err := postgres.Migrate(ctx, pool, content.Migrations, logger); err != nil {
		return err
	}
	if err := postgres.Migrate(ctx, pool, profiles.Migrations, logger); err != nil {
		return err
	}
	logger = logger.With("target", Content)
	var drafter content.Drafter
	if d := content.NewChatDrafter(cfg.ContentDrafts); d != nil {
		drafter = d
	}
	renderer := content.New(content.Options{
		Store:      content.NewStore(pool),
		Profiles:   profileReader{profiles.NewHandler(profiles.NewStore(pool), logger)},
		Drafter:    drafter,
		Registerer: reg,
		Logger:     logger,
	})
	path, h := content.NewHandler(renderer, logger).Routes(handlerOpts...)
	srv.HandleService(contentv1connect.ContentServiceName, path, authn.NewMiddleware(authenticator.AuthenticateBearer, handlerOpts...).Wrap(h))
	return nil
}

// profileReader reads a profile through the profiles handler, acting for
// the workspace the render is for (content has already authorized it).
type profileReader struct{ h *profiles.Handler }

func (r profileReader) Profile(ctx context.Context, ws, userID string) (*profilev1.Profile, error) {
	ctx = auth.NewContext(ctx, &auth.Principal{WorkspaceID: ws})
	res, err := r.h.GetProfile(ctx, &profilev1.GetProfileRequest{WorkspaceId: ws, Id: &profilev1.GetProfileRequest_UserId{UserId: userID}})
	if connect.CodeOf(err) == connect.CodeNotFound {
		return nil, content.ErrProfileNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	return res.GetProfile(), nil
}
