package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	ingestv1 "github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1/ingestv1connect"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/rpctest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDevServesAndCounts runs `whisper dev` as a new user would, sends
// events over the Segment API and Connect, and finds them counted on
// /metrics: the RED series of the route and the procedure, and the business
// series of ingestion.
func TestDevServesAndCounts(t *testing.T) {
	httpAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	const writeKey = "wk_dev_test_pinned_write_key_0001"
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(),
		childEnv+"=dev",
		"WHISPER_HTTP_ADDR="+httpAddr,
		"WHISPER_DEV_KAFKA_ADDR="+kafkaAddr,
		"WHISPER_DEV_WRITE_KEY="+writeKey,
		"WHISPER_DATABASE_URL="+pgtest.NewDatabase(t),
	)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	child.Stderr = &logs
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	t.Cleanup(func() {
		child.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			child.Process.Kill()
			t.Errorf("whisper dev did not stop within 30 s of SIGINT")
		}
	})
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "curl") {
				banner <- b.String()
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	base := "http://" + httpAddr
	select {
	case b := <-banner:
		for _, want := range []string{writeKey, base + "/v1/", base + "/metrics", kafkaAddr} {
			if !strings.Contains(b, want) {
				t.Errorf("banner lacks %q:\n%s", want, b)
			}
		}
	case err := <-exited:
		exited <- err
		t.Fatalf("whisper dev exited: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("no banner after 60 s\n%s", logs.String())
	}

	req, _ := http.NewRequest(http.MethodPost, base+"/v1/batch", strings.NewReader(
		`{"batch":[{"type":"track","userId":"u","event":"a"},{"type":"track","userId":"u","event":"b"},{"type":"identify","userId":"u"}]}`))
	req.SetBasicAuth(writeKey, "")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("POST /v1/batch = %d", res.StatusCode)
	}
	client := ingestv1connect.NewIngestServiceClient(http.DefaultClient, base, rpctest.BasicAuth(writeKey))
	if _, err := client.Track(context.Background(), &ingestv1.TrackRequest{Common: &ingestv1.Common{UserId: "u"}, Event: "c"}); err != nil {
		t.Fatalf("Track: %v", err)
	}

	got := scrape(t, base+"/metrics")
	for series, want := range map[string]float64{
		`whisper_ingest_events_accepted_total{api="segment",type="track"}`:                               2,
		`whisper_ingest_events_accepted_total{api="segment",type="identify"}`:                            1,
		`whisper_ingest_events_accepted_total{api="connect",type="track"}`:                               1,
		`whisper_ingest_producer_acked_records_total`:                                                    4,
		`whisper_http_requests_total{code="200",method="POST",route="/v1/batch"}`:                        1,
		`whisper_http_request_duration_seconds_count{route="/v1/batch"}`:                                 1,
		`whisper_rpc_requests_total{code="ok",procedure="/whisper.ingest.v1.IngestService/Track"}`:       1,
		`whisper_rpc_request_duration_seconds_count{procedure="/whisper.ingest.v1.IngestService/Track"}`: 1,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	if _, ok := got["whisper_ingest_producer_buffered_records"]; !ok {
		t.Error("whisper_ingest_producer_buffered_records missing")
	}
	// Every pool Run builds is collected; the main pool, which
	// authenticated these requests, has moved. (Redis stays unused here:
	// events without a messageId need no dedup lookup.)
	for _, series := range []string{
		`whisper_pgxpool_max_connections{pool="main"}`,
		`whisper_pgxpool_max_connections{pool="profiles"}`,
		`whisper_pgxpool_max_connections{pool="bandit"}`,
		`whisper_redis_pool_max_connections{client="main"}`,
		`whisper_redis_pool_max_connections{client="profiles"}`,
		`whisper_pgxpool_acquires_total{pool="main"}`,
	} {
		if got[series] <= 0 {
			t.Errorf("%s = %v, want > 0", series, got[series])
		}
	}

	// A page under development on its own port may stream in-app
	// messages: dev answers CORS preflights from any origin.
	pre, _ := http.NewRequest(http.MethodOptions, base+"/whisper.delivery.v1.DeliveryService/StreamInApp", nil)
	pre.Header.Set("Origin", "http://localhost:5173")
	pre.Header.Set("Access-Control-Request-Method", http.MethodPost)
	pre.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type") // as browsers send it: sorted, lower case
	res, err = http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" && got != "http://localhost:5173" {
		t.Errorf("CORS preflight from a local page: Access-Control-Allow-Origin %q, want it allowed", got)
	}
}

// scrape reads a Prometheus text exposition into series -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, fam := range families {
		for _, m := range fam.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[strings.Replace(key, name, name+"_count", 1)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
