package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

// defaultKafkaPartitions is what a topic created with partitions -1 gets.
// The services create their topics with explicit counts; this only matters
// for hand-made topics, and a few partitions keep per-key ordering visible
// without flooding one machine.
const defaultKafkaPartitions = 4

// startKafka starts a one-broker kfake cluster on addr.
//
// Auto topic creation stays off, as in production: a service that forgot to
// create its topic must fail here, not first in staging.
func startKafka(addr string, logger *slog.Logger) (*kfake.Cluster, error) {
	if addr == "" {
		addr = DefaultKafkaAddr
	}
	ln, err := listenKafka(addr)
	if err != nil {
		return nil, err
	}
	used := false
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ClusterID("whisper-dev"),
		kfake.DefaultNumPartitions(defaultKafkaPartitions),
		// kfake always asks for 127.0.0.1; hand it the listener we
		// already opened on the configured address instead, so that a
		// port clash is reported before kfake starts anything.
		kfake.ListenFn(func(string, string) (net.Listener, error) {
			if used {
				return nil, errors.New("devenv: kfake asked for a second listener; only one broker is configured")
			}
			used = true
			return ln, nil
		}),
		kfake.WithLogger(kfakeLogger{logger}),
	)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("kafka: starting the in-process broker on %s: %w", addr, err)
	}
	return cluster, nil
}

// listenKafka opens the broker's listener. kfake advertises the listener's
// own address, so a wildcard listener is wrapped to advertise loopback.
func listenKafka(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("kafka: WHISPER_DEV_KAFKA_ADDR %q is not host:port (e.g. %s): %w", addr, DefaultKafkaAddr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("kafka: WHISPER_DEV_KAFKA_ADDR %q has an invalid port (e.g. %s): %w", addr, DefaultKafkaAddr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("kafka: %s is already in use, probably by another `whisper dev` or a Kafka broker: stop it, or set WHISPER_DEV_KAFKA_ADDR to a free address such as 127.0.0.1:19092: %w", addr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: cannot listen on WHISPER_DEV_KAFKA_ADDR %s: set it to a local host:port such as %s: %w", addr, DefaultKafkaAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		tcp := ln.Addr().(*net.TCPAddr)
		return advertisingListener{ln, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tcp.Port}}, nil
	}
	return ln, nil
}

// advertisingListener reports addr as its address, which kfake puts in
// metadata responses as the broker's host and port.
type advertisingListener struct {
	net.Listener
	addr net.Addr
}

func (l advertisingListener) Addr() net.Addr { return l.addr }

// kfakeLogger sends kfake's logs to slog. kfake logs every request at info,
// which is noise in a dev terminal, so info becomes debug.
type kfakeLogger struct{ logger *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var sl slog.Level
	switch level {
	case kfake.LogLevelError:
		sl = slog.LevelError
	case kfake.LogLevelWarn:
		sl = slog.LevelWarn
	case kfake.LogLevelInfo, kfake.LogLevelDebug:
		sl = slog.LevelDebug
	default:
		return
	}
	// Formatting is skipped unless someone listens: kfake logs a lot.
	ctx := context.Background()
	if !l.logger.Enabled(ctx, sl) {
		return
	}
	l.logger.Log(ctx, sl, fmt.Sprintf(format, args...))
}
