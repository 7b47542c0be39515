package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/content"
	"github.com/whisperhq/whisper/services/deliver"
	"github.com/whisperhq/whisper/services/deliver/channel"
)

// hookReceiver is a webhook endpoint that verifies every request's
// signature and acts once per Idempotency-Key, as the channel package doc
// asks of receivers. It answers slowly so a kill lands while sends await
// their reply: between the receiver's effect and deliver's ledger write.
type hookReceiver struct {
	secret []byte
	delay  time.Duration

	mu       sync.Mutex
	requests int                  // every request that arrived
	byID     map[string]int       // Whisper-Delivery-Id -> requests
	effects  map[string]time.Time // Idempotency-Key -> when it was acted on
	bodies   map[string]string    // Whisper-Delivery-Id -> body
	bad      []string             // what was wrong with rejected requests
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	now := time.Now()
	id, key := r.Header.Get("Whisper-Delivery-Id"), r.Header.Get("Idempotency-Key")
	h.mu.Lock()
	h.requests++
	switch err := channel.VerifySignature(h.secret, r.Header, body, now, 5*time.Minute); {
	case err != nil:
		h.bad = append(h.bad, fmt.Sprintf("%s: %v", id, err))
	case key != fmt.Sprintf("%q", id):
		h.bad = append(h.bad, fmt.Sprintf("%s: Idempotency-Key %s", id, key))
	default:
		h.byID[id]++
		h.bodies[id] = string(body)
		if _, done := h.effects[key]; !done {
			h.effects[key] = now
		}
	}
	h.mu.Unlock()
	time.Sleep(h.delay)
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) counts() (requests, ids int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests, len(h.byID)
}

// TestDeliverHardKill runs `whisper serve --target=deliver` as a child
// process, SIGKILLs it while webhooks are being sent, starts another, and
// checks what a hard kill allows: every decision is delivered, each effect
// happens once at a receiver that honours the idempotency key, and the
// only repeated requests are for the sends in flight at the kill (claimed
// in the ledger, reply not yet recorded), taken over after their lease.
func TestDeliverHardKill(t *testing.T) {
	_, brokers := kafkatest.NewCluster(t)
	dbURL := pgtest.NewDatabase(t)
	redisURL := redistest.URL(t)
	const (
		admin     = "deliver-kill-admin-token-0123456789"
		secret    = "whsec_deliver_kill_test"
		lease     = 4 * time.Second
		dueNow    = 240
		scheduled = 60
		afterKill = 30 // produced while no deliver runs
		n         = dueNow + scheduled + afterKill
	)
	recv := &hookReceiver{secret: []byte(secret), delay: 40 * time.Millisecond,
		byID: map[string]int{}, effects: map[string]time.Time{}, bodies: map[string]string{}}
	hook := httptest.NewServer(recv)
	t.Cleanup(hook.Close)

	addr := freeAddr(t)
	base := "http://" + addr
	start := func() (*exec.Cmd, chan error, *strings.Builder) {
		child := serveChild("deliver", addr, brokers, dbURL, redisURL, admin,
			"WHISPER_DELIVER_WEBHOOK_SECRET="+secret,
			"WHISPER_DELIVER_WEBHOOK_ALLOW_PRIVATE=true",
			"WHISPER_DELIVER_CLAIM_LEASE="+lease.String(),
			"WHISPER_DELIVER_PROVIDER_TIMEOUT=2s",
		)
		logs := &strings.Builder{}
		child.Stderr = logs
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- child.Wait() }()
		t.Cleanup(func() {
			child.Process.Kill()
			<-exited
		})
		waitReady(t, base, exited, logs)
		return child, exited, logs
	}
	first, exited, logs := start()

	ctx := context.Background()
	ws := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, base, rpctest.Bearer(admin))
	w, err := ws.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "kill"})
	if err != nil {
		t.Fatal(err)
	}
	wsID := w.GetWorkspace().GetId()
	pool, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// The deliver target renders through content in process; the template
	// is stored the way ContentService stores it (the child has migrated).
	contents := content.NewHandler(content.New(content.Options{Store: content.NewStore(pool)}), slog.New(slog.DiscardHandler))
	tmpl, err := contents.CreateTemplate(auth.NewContext(ctx, &auth.Principal{WorkspaceID: wsID}), &contentv1.CreateTemplateRequest{
		Template: &contentv1.Template{Name: "hook", Channel: contentv1.Channel_CHANNEL_WEBHOOK, DefaultLocale: "en",
			Locales: map[string]*contentv1.Content{"en": {Body: `{"i": {{ event.i | json }}}`, Url: hook.URL + "/hook"}}}})
	if err != nil {
		t.Fatal(err)
	}

	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	// The scheduled ones fall due well after the kill, which happens once a
	// sixth of the due ones have arrived (about a fifth of a second in).
	now := time.Now()
	later := now.Add(3 * time.Second)
	sendTime := map[string]time.Time{}
	index := map[string]int{}
	var recs []*kgo.Record
	for i := range n {
		at := now
		if i >= dueNow && i < dueNow+scheduled {
			at = later
		}
		d := &decisionv1.Decision{DecisionId: uuid.NewString(), WorkspaceId: wsID, CampaignId: "camp-kill", VariantId: "A",
			UserId: fmt.Sprintf("u%d", i%40), Outcome: decisionv1.Outcome_OUTCOME_SEND, Channel: campaignv1.Channel_CHANNEL_WEBHOOK,
			ContentRef: tmpl.GetTemplate().GetTemplateId(), SendTime: timestamppb.New(at), TriggerProperties: fmt.Appendf(nil, `{"i": %d}`, i)}
		sendTime[d.GetDecisionId()], index[d.GetDecisionId()] = at, i
		b, err := proto.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: kafka.TopicDecisions, Key: kafka.Key(wsID, d.GetUserId()), Value: b})
	}
	if err := producer.ProduceSync(ctx, recs[:dueNow+scheduled]...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Kill mid-stream: some due ones sent, others awaiting their reply.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, ids := recv.counts(); ids >= dueNow/6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d webhooks within 20 s; child logs:\n%s", dueNow/6, logs.String())
		}
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	exited <- nil
	killedAt := time.Now()
	reqsAtKill, idsAtKill := recv.counts()
	states := map[string]int{}
	rows, err := pool.Query(ctx, `SELECT state, count(*) FROM deliver_deliveries GROUP BY state`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		var c int
		if err := rows.Scan(&s, &c); err != nil {
			t.Fatal(err)
		}
		states[s] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// A send can only be repeated if its row was claimed and its outcome
	// not recorded: state sending, frozen by the kill.
	inFlight := states["sending"]
	sending := map[string]bool{}
	rows, err = pool.Query(ctx, `SELECT delivery_id FROM deliver_deliveries WHERE state = 'sending'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		sending[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("at the SIGKILL: %d webhook requests for %d deliveries arrived; ledger %v: %d in flight", reqsAtKill, idsAtKill, states, inFlight)
	if idsAtKill >= dueNow {
		t.Fatalf("all %d due were delivered before the kill: it proves nothing", dueNow)
	}

	// Decisions keep coming while deliver is down; the next process must
	// consume them from the group's committed offsets.
	if err := producer.ProduceSync(ctx, recs[dueNow+scheduled:]...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The killed member stays in the consumer group until its session
	// times out (45 s), holding up the new member's assignment; evict it
	// now, as the broker would then, so the test does not wait for it.
	evictGroupMembers(t, producer, deliver.DefaultGroup)

	start()
	restartedAt := time.Now()
	var requests, ids int
	for deadline := time.Now().Add(lease + 30*time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var sent int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM deliver_deliveries WHERE state = 'sent'`).Scan(&sent); err != nil {
			t.Fatal(err)
		}
		if requests, ids = recv.counts(); ids >= n && sent >= n {
			break
		}
	}
	time.Sleep(time.Second) // a late repeat would arrive now

	recv.mu.Lock()
	defer recv.mu.Unlock()
	requests = recv.requests
	if len(recv.bad) > 0 {
		t.Errorf("%d requests rejected, e.g. %v", len(recv.bad), recv.bad[:min(3, len(recv.bad))])
	}
	var missing, wrongBody, early []string
	lateAfterKill := 0
	for id, at := range sendTime {
		// (Those produced after the kill are due at once: not scheduled.)
		if recv.byID[id] == 0 {
			missing = append(missing, id)
			continue
		}
		if want := fmt.Sprintf(`{"i": %d}`, index[id]); recv.bodies[id] != want {
			wrongBody = append(wrongBody, fmt.Sprintf("%s: %s, want %s", id, recv.bodies[id], want))
		}
		if first := recv.effects[fmt.Sprintf("%q", id)]; first.Before(at) {
			early = append(early, id)
		} else if at.After(now) && first.After(killedAt) {
			lateAfterKill++
		}
	}
	var wave2 time.Duration
	for _, r := range recs[dueNow+scheduled:] {
		var d decisionv1.Decision
		if err := proto.Unmarshal(r.Value, &d); err != nil {
			t.Fatal(err)
		}
		if at, ok := recv.effects[fmt.Sprintf("%q", d.GetDecisionId())]; ok {
			wave2 = max(wave2, at.Sub(restartedAt))
		}
	}
	t.Logf("the %d decisions produced while deliver was down were all sent within %v of the restart being ready", afterKill, wave2.Round(time.Millisecond))
	repeats := requests - len(recv.byID)
	t.Logf("after the restart: %d requests for %d deliveries, %d effects; %d repeated requests, %d sends were in flight at the kill; %d of %d scheduled sent after the restart",
		requests, len(recv.byID), len(recv.effects), repeats, inFlight, lateAfterKill, scheduled)
	if len(missing) > 0 {
		t.Errorf("%d of %d decisions never delivered, e.g. %v\nchild logs:\n%s", len(missing), n, missing[:min(3, len(missing))], logs.String())
	}
	if len(recv.byID) != n || len(recv.effects) != n {
		t.Errorf("%d distinct delivery ids, %d effects after idempotency-key dedup; want %d each", len(recv.byID), len(recv.effects), n)
	}
	if repeats > inFlight {
		t.Errorf("%d requests repeated, more than the %d sends in flight at the kill", repeats, inFlight)
	}
	for id, c := range recv.byID {
		if c > 1 && (c > 2 || !sending[id]) {
			t.Errorf("delivery %s was requested %d times; only a send in flight at the kill may be repeated, once", id, c)
		}
	}
	if len(wrongBody) > 0 {
		t.Errorf("bodies: %v", wrongBody[:min(3, len(wrongBody))])
	}
	if len(early) > 0 {
		t.Errorf("%d scheduled deliveries sent before their send time", len(early))
	}
	switch {
	case killedAt.After(later):
		t.Logf("the kill came %v after the scheduled ones were due (a slow machine): their sends after a restart are not proven", killedAt.Sub(later))
	case lateAfterKill != scheduled:
		t.Errorf("%d of the %d scheduled deliveries were first sent after the restart, want all", lateAfterKill, scheduled)
	}
	var sent, total int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FROM deliver_deliveries`).Scan(&sent, &total); err != nil {
		t.Fatal(err)
	}
	if sent != n || total != n {
		t.Errorf("ledger: %d sent of %d rows, want %d of %d", sent, total, n, n)
	}
	var attempts int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM deliver_attempts`).Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	if attempts != n {
		// A killed attempt leaves no row: only recorded outcomes count.
		t.Errorf("ledger: %d attempts recorded, want %d", attempts, n)
	}
}

// evictGroupMembers removes every member of group, as the coordinator does
// when a member's session times out.
func evictGroupMembers(t *testing.T, cl *kgo.Client, group string) {
	t.Helper()
	adm := kadm.NewClient(cl)
	described, err := adm.DescribeGroups(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	for _, m := range described[group].Members {
		lm := kmsg.NewLeaveGroupRequestMember()
		lm.MemberID = m.MemberID
		req.Members = append(req.Members, lm)
	}
	if len(req.Members) == 0 {
		return
	}
	res, err := req.RequestWith(context.Background(), cl)
	if err == nil {
		err = kerr.ErrorForCode(res.ErrorCode)
	}
	if err != nil {
		t.Fatalf("evict the killed member from %s: %v", group, err)
	}
	t.Logf("evicted %d member(s) of %s", len(req.Members), group)
}
