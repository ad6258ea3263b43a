package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"meshbed.local/controlplanes/go/internal/catalog"
	"meshbed.local/controlplanes/go/internal/consul"
	"meshbed.local/controlplanes/go/internal/pushlog"
)

type fakeSource struct {
	mu     sync.Mutex
	st     catalog.State
	synced bool
}

func (f *fakeSource) State() catalog.State { f.mu.Lock(); defer f.mu.Unlock(); return f.st }
func (f *fakeSource) Synced() bool         { f.mu.Lock(); defer f.mu.Unlock(); return f.synced }
func (f *fakeSource) Stats() consul.Stats  { return consul.Stats{} }

func (f *fakeSource) setBackends(ports ...uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := f.st.Clone()
	var insts []catalog.Instance
	for _, p := range ports {
		insts = append(insts, catalog.Instance{ID: "b", Service: "backend", Address: "127.0.0.1", Port: p, Instance: "b", Health: catalog.Healthy})
	}
	next.Services["backend"] = insts
	f.st = next
}

func sidecarNode(t *testing.T, id string) *corev3.Node {
	t.Helper()
	md, err := structpb.NewStruct(map[string]any{"meshbed": map[string]any{
		"role": "sidecar", "service": "frontend", "instance": id, "inbound_port": 21001.0,
		"app_address": "127.0.0.1:21000", "outbound_port": 21002.0, "upstreams": []any{"backend"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Node{Id: id, Metadata: md}
}

func start(t *testing.T, src *fakeSource) (*ControlPlane, discovery.AggregatedDiscoveryServiceClient, *httptest.Server) {
	t.Helper()
	cp := New(src, slog.New(slog.NewTextHandler(io.Discard, nil)), 1000)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { _ = cp.Serve(ctx, lis, nil); close(served) }()
	go cp.PushLoop(ctx)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(cp.debugHandler())
	t.Cleanup(func() { hs.Close(); conn.Close(); cancel(); <-served })
	return cp, discovery.NewAggregatedDiscoveryServiceClient(conn), hs
}

func recvTimeout[T any](t *testing.T, recv func() (T, error)) T {
	t.Helper()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() { v, err := recv(); ch <- res{v, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.v
	case <-time.After(5 * time.Second):
		t.Fatal("no response within 5 s")
	}
	var zero T
	return zero
}

func endpointsOf(t *testing.T, resp []*anypb.Any) int {
	t.Helper()
	n := 0
	for _, a := range resp {
		var cla endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		for _, l := range cla.GetEndpoints() {
			n += len(l.GetLbEndpoints())
		}
	}
	return n
}

func TestStateOfTheWorldWaitsForSyncThenPushesChanges(t *testing.T) {
	src := &fakeSource{st: catalog.NewState()}
	src.setBackends(2001, 2002)
	cp, client, hs := start(t, src)

	if r, err := http.Get(hs.URL + "/healthz"); err != nil || r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz before sync: %v %v", r, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := sidecarNode(t, "frontend-1")
	if err := s.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	// nothing before the first Consul sync: never a partial config
	time.Sleep(200 * time.Millisecond)
	src.mu.Lock()
	src.synced = true
	src.mu.Unlock()
	cp.Notify()
	cds := recvTimeout(t, s.Recv)
	if cds.GetTypeUrl() != resource.ClusterType || len(cds.GetResources()) != 2 {
		t.Fatalf("CDS: %v", cds)
	}
	if r, _ := http.Get(hs.URL + "/healthz"); r.StatusCode != http.StatusOK {
		t.Fatalf("healthz after sync: %d", r.StatusCode)
	}
	// ACK CDS (node only on the first request), ask for EDS
	_ = s.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: cds.GetVersionInfo(), ResponseNonce: cds.GetNonce()})
	_ = s.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{"backend"}})
	eds := recvTimeout(t, s.Recv)
	if eds.GetTypeUrl() != resource.EndpointType || endpointsOf(t, eds.GetResources()) != 2 {
		t.Fatalf("EDS: %v", eds)
	}
	_ = s.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{"backend"},
		VersionInfo: eds.GetVersionInfo(), ResponseNonce: eds.GetNonce()})

	// a Consul change: pushed at once
	src.setBackends(2001)
	cp.Notify()
	eds2 := recvTimeout(t, s.Recv)
	if endpointsOf(t, eds2.GetResources()) != 1 || eds2.GetVersionInfo() == eds.GetVersionInfo() {
		t.Fatalf("EDS after change: %v", eds2)
	}
	// a NACK is recorded with its error
	_ = s.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{"backend"},
		VersionInfo: eds.GetVersionInfo(), ResponseNonce: eds2.GetNonce(), ErrorDetail: status.New(codes.InvalidArgument, "nope").Proto()})

	var acks, nacks, sent int
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		acks, nacks, sent = 0, 0, 0
		for _, e := range cp.pushlog.Since(0) {
			switch e.Event {
			case pushlog.Ack:
				acks++
			case pushlog.Nack:
				nacks++
				if e.Error != "nope" || e.Version != eds2.GetVersionInfo() || e.Node != "frontend-1" {
					t.Fatalf("nack event %+v", e)
				}
			case pushlog.Sent:
				sent++
			}
		}
		if nacks == 1 && time.Now().After(deadline.Add(-2500*time.Millisecond)) {
			break // seen, and a little time for a (wrong) resend of the rejected version
		}
		time.Sleep(10 * time.Millisecond)
	}
	if acks != 2 || nacks != 1 || sent != 3 {
		t.Fatalf("push log: %d sent, %d acks, %d nacks: %+v", sent, acks, nacks, cp.pushlog.Since(0))
	}
}

func TestDeltaStreamGetsResourcesAndChanges(t *testing.T) {
	src := &fakeSource{st: catalog.NewState(), synced: true}
	src.setBackends(2001, 2002)
	cp, client, _ := start(t, src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := client.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&discovery.DeltaDiscoveryRequest{Node: sidecarNode(t, "frontend-2"), TypeUrl: resource.ClusterType})
	cds := recvTimeout(t, s.Recv)
	if cds.GetTypeUrl() != resource.ClusterType || len(cds.GetResources()) != 2 {
		t.Fatalf("delta CDS: %v", cds)
	}
	_ = s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: cds.GetNonce()})
	_ = s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"backend"}})
	eds := recvTimeout(t, s.Recv)
	if len(eds.GetResources()) != 1 {
		t.Fatalf("delta EDS: %v", eds)
	}
	first := eds.GetResources()[0].GetVersion()
	_ = s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: eds.GetNonce()})

	src.setBackends(2002)
	cp.Notify()
	eds2 := recvTimeout(t, s.Recv)
	if len(eds2.GetResources()) != 1 || eds2.GetResources()[0].GetVersion() == first {
		t.Fatalf("delta EDS after change: %v", eds2)
	}
	waitAck := time.Now().Add(3 * time.Second)
	for time.Now().Before(waitAck) {
		n := 0
		for _, e := range cp.pushlog.Since(0) {
			if e.Event == pushlog.Ack {
				n++
			}
		}
		if n == 2 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("delta ACKs not recorded: %+v", cp.pushlog.Since(0))
}

func TestNodeWithoutMetadataIsRefused(t *testing.T) {
	src := &fakeSource{st: catalog.NewState(), synced: true}
	_, client, _ := start(t, src)
	s, err := client.StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: "stranger"}, TypeUrl: resource.ClusterType})
	_, err = s.Recv()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("want InvalidArgument, got %v", err)
	}
}

func TestResourceName(t *testing.T) {
	a, _ := anypb.New(&endpointv3.ClusterLoadAssignment{ClusterName: "backend~v1"})
	if got := resourceName(a); got != "backend~v1" {
		t.Fatal(got)
	}
}
