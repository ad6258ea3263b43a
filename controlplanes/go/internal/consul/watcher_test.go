package consul

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNextIndex(t *testing.T) {
	cases := []struct{ old, got, want uint64 }{
		{0, 5, 5}, {5, 5, 5}, {5, 9, 9}, {9, 5, 0}, {5, 0, 0}, {0, 0, 0},
	}
	for _, c := range cases {
		if got := NextIndex(c.old, c.got); got != c.want {
			t.Errorf("NextIndex(%d, %d) = %d, want %d", c.old, c.got, got, c.want)
		}
	}
}

// fakeConsul serves the three endpoints the watcher uses, with blocking
// queries, and can be switched to answer 500s.
type fakeConsul struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{}
	ports   []int
	kv      string
	failing atomic.Bool
	calls   atomic.Int64
}

func newFake() *fakeConsul {
	return &fakeConsul{index: 10, changed: make(chan struct{}), ports: []int{2001, 2002}}
}

func (f *fakeConsul) set(ports []int, kv string) {
	f.mu.Lock()
	f.ports, f.kv = ports, kv
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	if f.failing.Load() {
		http.Error(w, "rpc error: no leader", http.StatusInternalServerError)
		return
	}
	want, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	f.mu.Lock()
	idx, ch := f.index, f.changed
	f.mu.Unlock()
	if want >= idx {
		select {
		case <-ch:
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
	if f.failing.Load() { // it failed while the query blocked
		http.Error(w, "rpc error: no leader", http.StatusInternalServerError)
		return
	}
	f.mu.Lock()
	idx, ports, kv := f.index, f.ports, f.kv
	f.mu.Unlock()
	w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	var body any
	switch r.URL.Path {
	case "/v1/catalog/services":
		body = map[string][]string{"backend": {"meshbed"}}
	case "/v1/health/service/backend":
		var entries []map[string]any
		for _, p := range ports {
			id := "backend-" + strconv.Itoa(p)
			entries = append(entries, map[string]any{
				"Node":    map[string]any{"Address": "127.0.0.1"},
				"Service": map[string]any{"ID": id, "Service": "backend", "Address": "127.0.0.1", "Port": p, "Meta": map[string]string{"instance": id}},
				"Checks":  []map[string]any{{"Status": "passing"}},
			})
		}
		body = entries
	case "/v1/kv/meshbed/":
		if kv == "" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		body = []map[string]any{{"Key": "meshbed/services/backend", "Value": base64.StdEncoding.EncodeToString([]byte(kv))}}
	default:
		w.WriteHeader(http.StatusNotFound)
		return
	}
	_ = json.NewEncoder(w).Encode(body)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatcherKeepsLastGoodStateWhileConsulFails(t *testing.T) {
	fake := newFake()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	var changes atomic.Int64
	w, err := New(srv.URL, Options{
		Wait:     200 * time.Millisecond,
		OnChange: func() { changes.Add(1) },
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "first sync", w.Synced)
	if n := len(w.State().Services["backend"]); n != 2 {
		t.Fatalf("instances after sync: %d", n)
	}
	if changes.Load() != 1 {
		t.Fatalf("the first sync must notify once, got %d", changes.Load())
	}

	// a change: one instance leaves, a policy arrives
	fake.set([]int{2001}, `{"lb_policy": "RANDOM"}`)
	waitFor(t, "change", func() bool {
		st := w.State()
		return len(st.Services["backend"]) == 1 && st.Policies["backend"].LBPolicy == "RANDOM"
	})

	// Consul fails (5xx) while its catalog would say "empty": nothing changes
	fake.failing.Store(true)
	fake.set(nil, "")
	before := changes.Load()
	callsBefore := fake.calls.Load()
	waitFor(t, "failing queries", func() bool { return fake.calls.Load() > callsBefore+6 })
	if st := w.State(); len(st.Services["backend"]) != 1 || st.Policies["backend"].LBPolicy != "RANDOM" {
		t.Fatalf("a failing Consul changed the state: %+v", st)
	}
	if changes.Load() != before || w.Stats().Errors == 0 || w.Stats().Up {
		t.Fatalf("changes %d->%d, stats %+v", before, changes.Load(), w.Stats())
	}

	// Consul answers again: the real (empty) answer is taken
	fake.failing.Store(false)
	waitFor(t, "resync", func() bool {
		st := w.State()
		return len(st.Services["backend"]) == 0 && len(st.Policies) == 0
	})
	if !w.Stats().Up {
		t.Fatal("watcher must be up again")
	}
}

func TestWatcherKeepsStateWhenConsulIsGone(t *testing.T) {
	fake := newFake()
	srv := httptest.NewServer(fake)
	w, err := New(srv.URL, Options{Wait: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first sync", w.Synced)
	srv.CloseClientConnections()
	srv.Close()
	waitFor(t, "errors", func() bool { return w.Stats().Errors >= 3 })
	if n := len(w.State().Services["backend"]); n != 2 {
		t.Fatalf("instances after Consul went away: %d", n)
	}
}
