package kafka

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/whisperhq/whisper/internal/config"
)

func TestClientsShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Brokers: config.StringList{"127.0.0.1:1"}, Partitions: 1, ReplicationFactor: -1, MaxBufferedBytes: 1 << 20}
	for _, name := range []string{"ingest", "profiles"} {
		cl, err := NewClient(cfg, name, reg)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) == 0 {
		t.Fatal("no kafka metrics gathered")
	}
}
