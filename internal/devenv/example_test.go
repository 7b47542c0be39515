package devenv_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/whisperhq/whisper/internal/devenv"
)

// How `whisper dev` uses the package: start, print where everything is,
// run the services, and stop it all on the way out.
func ExampleStart() {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	env, err := devenv.Start(ctx, devenv.Config{
		KafkaAddr:   os.Getenv("WHISPER_DEV_KAFKA_ADDR"), // empty: 127.0.0.1:9092
		DatabaseURL: os.Getenv("WHISPER_DATABASE_URL"),   // empty: local server, else throwaway cluster
		Logger:      logger,
	})
	if err != nil {
		logger.Error("starting dev dependencies", "err", err)
		return
	}
	defer env.Close()

	logger.Info("dev dependencies",
		"kafka", env.KafkaBrokers(),
		"redis", env.RedisURL(),
		"postgres", env.PostgresSource(),
	)
	// ... run the services against env.KafkaBrokers(), env.RedisURL() and
	// env.DatabaseURL() until ctx is done.
}
