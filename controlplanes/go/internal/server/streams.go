package server

import (
	"context"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"meshbed.local/controlplanes/go/internal/nodemeta"
	"meshbed.local/controlplanes/go/internal/pushlog"
	"meshbed.local/controlplanes/go/internal/resources"
)

// maxPendingDeltaNonces bounds the unanswered delta responses remembered per stream.
const maxPendingDeltaNonces = 64

type streamKey struct {
	delta bool // SotW and delta streams are numbered separately
	id    int64
}

// sent is one response on a stream, until Envoy answers it.
type sent struct {
	typeURL   string
	nonce     string
	version   string
	resources []string
	answered  bool
}

// typeStats are one stream's counters for one type.
type typeStats struct {
	SentVersion  string   `json:"sent_version"`
	SentNonce    string   `json:"sent_nonce"`
	AckedVersion string   `json:"acked_version"`
	LastError    string   `json:"last_error"`
	Acks         int      `json:"acks"`
	Nacks        int      `json:"nacks"`
	Resources    []string `json:"resources"`
}

type stream struct {
	key         streamKey
	peer        string
	node        string
	meta        nodemeta.Meta
	connectedAt time.Time
	last        map[string]*sent // SotW: type URL -> last response
	pending     []*sent          // delta: responses not answered yet, oldest first
	types       map[string]*typeStats
}

// streams implements go-control-plane's callbacks: it registers nodes on
// their first request and records every response and ACK/NACK.
type streams struct {
	cp *ControlPlane
	mu sync.Mutex
	m  map[streamKey]*stream
}

var _ xds.Callbacks = (*streams)(nil)

func newStreams(cp *ControlPlane) *streams { return &streams{cp: cp, m: map[streamKey]*stream{}} }

func (s *streams) open(ctx context.Context, key streamKey) error {
	st := &stream{key: key, connectedAt: time.Now(), last: map[string]*sent{}, types: map[string]*typeStats{}}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		st.peer = p.Addr.String()
	}
	s.mu.Lock()
	s.m[key] = st
	s.mu.Unlock()
	return nil
}

func (s *streams) closed(key streamKey) {
	s.mu.Lock()
	st := s.m[key]
	delete(s.m, key)
	s.mu.Unlock()
	if st != nil && st.node != "" {
		s.cp.release(st.node)
		s.cp.log.Info("stream closed", "node", st.node, "stream", key.id, "delta", key.delta)
	}
}

// request handles the node on a stream's first request; a node without
// valid meshbed metadata is refused (the stream ends with INVALID_ARGUMENT).
func (s *streams) request(key streamKey, n *corev3.Node) (*stream, error) {
	s.mu.Lock()
	st := s.m[key]
	s.mu.Unlock()
	if st == nil {
		return nil, status.Error(codes.Internal, "unknown stream")
	}
	if st.node != "" {
		return st, nil
	}
	meta, err := nodemeta.FromNode(n)
	if err != nil {
		s.cp.log.Error("refusing stream", "stream", key.id, "peer", st.peer, "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	st.node, st.meta = n.GetId(), meta
	s.mu.Unlock()
	s.cp.log.Info("node connected", "node", st.node, "role", meta.Role, "service", meta.Service,
		"stream", key.id, "delta", key.delta, "peer", st.peer)
	s.cp.acquire(st.node, meta)
	return st, nil
}

func (s *streams) stats(st *stream, typeURL string) *typeStats {
	ts := st.types[typeURL]
	if ts == nil {
		ts = &typeStats{}
		st.types[typeURL] = ts
	}
	return ts
}

// answer records Envoy's ACK or NACK of response r.
func (s *streams) answer(st *stream, r *sent, errDetail *status.Status, version string) {
	short := resources.Short[r.typeURL]
	s.mu.Lock()
	ts := s.stats(st, r.typeURL)
	r.answered = true
	if errDetail != nil {
		ts.Nacks++
		ts.LastError = errDetail.Message()
	} else {
		ts.Acks++
		ts.AckedVersion = version
	}
	s.mu.Unlock()
	ev := pushlog.Event{Node: st.node, Type: short, Version: r.version, Nonce: r.nonce, Resources: r.resources}
	if errDetail != nil {
		ev.Event, ev.Error = pushlog.Nack, errDetail.Message()
		s.cp.pushlog.Record(ev)
		s.cp.log.Warn("NACK", "node", st.node, "type", short, "version", r.version, "nonce", r.nonce,
			"error", strings.Join(strings.Fields(ev.Error), " "))
		return
	}
	ev.Event = pushlog.Ack
	s.cp.pushlog.Record(ev)
	s.cp.log.Info("ack", "node", st.node, "type", short, "version", version, "nonce", r.nonce)
}

func (s *streams) sent(st *stream, r *sent, removed []string) {
	short := resources.Short[r.typeURL]
	s.mu.Lock()
	ts := s.stats(st, r.typeURL)
	ts.SentVersion, ts.SentNonce, ts.Resources = r.version, r.nonce, r.resources
	if st.key.delta {
		st.pending = append(st.pending, r)
		if len(st.pending) > maxPendingDeltaNonces {
			st.pending = st.pending[len(st.pending)-maxPendingDeltaNonces:]
		}
	} else {
		st.last[r.typeURL] = r
	}
	s.mu.Unlock()
	s.cp.pushlog.Record(pushlog.Event{Node: st.node, Type: short, Version: r.version, Nonce: r.nonce,
		Event: pushlog.Sent, Resources: r.resources})
	attrs := []any{"node", st.node, "type", short, "version", r.version, "nonce", r.nonce, "resources", len(r.resources)}
	if st.key.delta {
		attrs = append(attrs, "delta", true, "removed", len(removed))
	}
	s.cp.log.Info("sent", attrs...)
}

// -- state of the world ------------------------------------------------------

func (s *streams) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return s.open(ctx, streamKey{id: id})
}

func (s *streams) OnStreamClosed(id int64, _ *corev3.Node) { s.closed(streamKey{id: id}) }

func (s *streams) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	st, err := s.request(streamKey{id: id}, req.GetNode())
	if err != nil {
		return err
	}
	if resources.Short[req.GetTypeUrl()] == "" || req.GetResponseNonce() == "" {
		return nil // another type, or a first request: nothing to answer
	}
	s.mu.Lock()
	r := st.last[req.GetTypeUrl()]
	s.mu.Unlock()
	if r == nil || r.nonce != req.GetResponseNonce() || r.answered {
		return nil // stale nonce (an answer to an older response), or answered already
	}
	var detail *status.Status
	if req.GetErrorDetail() != nil {
		detail = status.FromProto(req.GetErrorDetail())
	} else if req.GetVersionInfo() != r.version {
		detail = status.Newf(codes.Unknown, "version_info %q != sent %q without error_detail", req.GetVersionInfo(), r.version)
	}
	if detail != nil {
		// Never resend what was rejected: the snapshot cache answers any request
		// whose version differs from the snapshot's at once, which would loop
		// (send, NACK, send, ...). The watch this request opens is made to carry
		// the rejected version, so the next response is the next change.
		req.VersionInfo = r.version
	}
	s.answer(st, r, detail, req.GetVersionInfo())
	return nil
}

func (s *streams) OnStreamResponse(_ context.Context, id int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	s.mu.Lock()
	st := s.m[streamKey{id: id}]
	s.mu.Unlock()
	if st == nil || resources.Short[resp.GetTypeUrl()] == "" {
		return
	}
	names := make([]string, 0, len(resp.GetResources()))
	for _, a := range resp.GetResources() {
		names = append(names, resourceName(a))
	}
	s.sent(st, &sent{typeURL: resp.GetTypeUrl(), nonce: resp.GetNonce(), version: resp.GetVersionInfo(), resources: names}, nil)
}

// -- delta -------------------------------------------------------------------

func (s *streams) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return s.open(ctx, streamKey{delta: true, id: id})
}

func (s *streams) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	s.closed(streamKey{delta: true, id: id})
}

func (s *streams) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	st, err := s.request(streamKey{delta: true, id: id}, req.GetNode())
	if err != nil {
		return err
	}
	nonce := req.GetResponseNonce()
	if nonce == "" {
		return nil
	}
	s.mu.Lock()
	var r *sent
	for i, p := range st.pending {
		if p.nonce == nonce {
			r = p
			st.pending = append(st.pending[:i:i], st.pending[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	if r == nil || r.answered {
		return nil
	}
	var detail *status.Status
	if req.GetErrorDetail() != nil {
		detail = status.FromProto(req.GetErrorDetail())
	}
	s.answer(st, r, detail, r.version)
	return nil
}

func (s *streams) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	s.mu.Lock()
	st := s.m[streamKey{delta: true, id: id}]
	s.mu.Unlock()
	if st == nil || resources.Short[resp.GetTypeUrl()] == "" {
		return
	}
	names := make([]string, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		names = append(names, r.GetName())
	}
	s.sent(st, &sent{typeURL: resp.GetTypeUrl(), nonce: resp.GetNonce(), version: resp.GetSystemVersionInfo(), resources: names},
		resp.GetRemovedResources())
}

// -- REST (unused by meshbed's Envoys) -----------------------------------------

func (s *streams) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error { return nil }

func (s *streams) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

// resourceName reads field 1 of a packed resource: the name of a Cluster,
// Listener or RouteConfiguration, the cluster_name of a ClusterLoadAssignment.
func resourceName(a *anypb.Any) string {
	b := a.GetValue()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return ""
			}
			return string(v)
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return ""
		}
		b = b[m:]
	}
	return ""
}

// describe is the /debug/nodes view of the streams.
func (s *streams) describe() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]map[string]any, 0, len(s.m))
	for _, st := range s.m {
		types := map[string]any{}
		for t, ts := range st.types {
			c := *ts
			types[resources.Short[t]] = c
		}
		out = append(out, map[string]any{
			"node": st.node, "stream": st.key.id, "delta": st.key.delta, "peer": st.peer,
			"role": st.meta.Role, "service": st.meta.Service, "instance": st.meta.Instance,
			"connected_at": float64(st.connectedAt.UnixNano()) / 1e9, "types": types,
		})
	}
	return out
}
