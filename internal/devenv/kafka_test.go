package devenv

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestKafkaProduceConsume(t *testing.T) {
	before := runtime.NumGoroutine()
	broker, err := startKafka("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatalf("startKafka: %v", err)
	}
	produceConsume(t, broker.ListenAddrs())
	broker.Close()
	waitGoroutines(t, before)
}

// Kafka tools bootstrap from the address they were given and then dial what
// the metadata advertises, so the two must agree (and never be a wildcard).
func TestKafkaAdvertisesListenAddress(t *testing.T) {
	tests := []struct {
		addr     string
		wantHost string
	}{
		{addr: "127.0.0.1:0", wantHost: "127.0.0.1"},
		{addr: "0.0.0.0:0", wantHost: "127.0.0.1"},
		{addr: ":0", wantHost: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			broker, err := startKafka(tt.addr, testLogger(t))
			if err != nil {
				t.Fatalf("startKafka(%q): %v", tt.addr, err)
			}
			defer broker.Close()
			listen := broker.ListenAddrs()
			if len(listen) != 1 {
				t.Fatalf("ListenAddrs() = %v, want one broker", listen)
			}
			host, _, _ := net.SplitHostPort(listen[0])
			if host != tt.wantHost {
				t.Errorf("ListenAddrs() = %v, want host %s", listen, tt.wantHost)
			}

			cl, err := kgo.NewClient(kgo.SeedBrokers(listen[0]))
			if err != nil {
				t.Fatalf("kgo.NewClient: %v", err)
			}
			defer cl.Close()
			md, err := kadm.NewClient(cl).BrokerMetadata(t.Context())
			if err != nil {
				t.Fatalf("BrokerMetadata: %v", err)
			}
			var advertised []string
			for _, b := range md.Brokers {
				advertised = append(advertised, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
			}
			if len(advertised) != 1 || advertised[0] != listen[0] {
				t.Errorf("metadata advertises %v, want [%s]", advertised, listen[0])
			}
		})
	}
}

func TestKafkaBadAddress(t *testing.T) {
	tests := []struct {
		name string
		addr string
	}{
		{name: "no port", addr: "127.0.0.1"},
		{name: "named port", addr: "127.0.0.1:kafka"},
		{name: "port out of range", addr: "127.0.0.1:70000"},
		{name: "not a local address", addr: "192.0.2.1:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broker, err := startKafka(tt.addr, testLogger(t))
			if err == nil {
				broker.Close()
				t.Fatalf("startKafka(%q) succeeded, want an error", tt.addr)
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), "WHISPER_DEV_KAFKA_ADDR") {
				t.Errorf("startKafka(%q) error = %q, want it to name WHISPER_DEV_KAFKA_ADDR", tt.addr, err)
			}
		})
	}
}

// A second `whisper dev` must say the port is taken and how to move, before
// it starts anything else.
func TestStartKafkaAddressInUse(t *testing.T) {
	first, err := startKafka("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatalf("startKafka: %v", err)
	}
	defer first.Close()
	addr := first.ListenAddrs()[0]

	env, err := Start(t.Context(), Config{KafkaAddr: addr, Logger: testLogger(t)})
	if err == nil {
		env.Close()
		t.Fatalf("second Start on %s succeeded, want an error", addr)
	}
	t.Logf("error: %v", err)
	for _, want := range []string{addr, "already in use", "WHISPER_DEV_KAFKA_ADDR"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error = %q, want it to contain %q", err, want)
		}
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Start error = %v, want it to wrap EADDRINUSE", err)
	}
	// The first broker must be unharmed.
	produceConsume(t, first.ListenAddrs())
}

// kcat (librdkafka) is the tool developers reach for; it must list and read
// what the services write. Optional: skipped when kcat is not installed.
func TestKafkaKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed; this optional check needs it (apt-get install kcat)")
	}
	broker, err := startKafka("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatalf("startKafka: %v", err)
	}
	defer broker.Close()
	addr := broker.ListenAddrs()[0]
	produceConsume(t, []string{addr})

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", addr, "-C", "-t", "whisper.events", "-o", "beginning", "-e", "-q", "-f", "%k=%s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, out)
	}
	if got, want := string(out), "ws1/user1=hello\n"; got != want {
		t.Errorf("kcat read %q, want %q", got, want)
	}
}
