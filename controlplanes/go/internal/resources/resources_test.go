package resources

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"meshbed.local/controlplanes/go/internal/catalog"
	"meshbed.local/controlplanes/go/internal/nodemeta"
	"meshbed.local/controlplanes/go/internal/policy"
)

type validator interface{ ValidateAll() error }

func sidecar() nodemeta.Meta {
	return nodemeta.Meta{Role: "sidecar", Service: "frontend", Instance: "frontend-1", ListenAddress: "127.0.0.1",
		InboundPort: 21001, AppAddress: "127.0.0.1:21000", OutboundPort: 21002, Upstreams: []string{"backend"},
		TraceCluster: "jaeger_otlp", TraceService: "frontend-sidecar"}
}

func ingress() nodemeta.Meta {
	return nodemeta.Meta{Role: "ingress", Service: "ingress", Instance: "ingress", ListenAddress: "127.0.0.1",
		OutboundPort: 8080, Routes: []nodemeta.Route{{Prefix: "/", Service: "frontend"}}, TraceCluster: "jaeger_otlp"}
}

func inst(id, version string, port uint32, h catalog.Health) catalog.Instance {
	return catalog.Instance{ID: id, Service: "backend", Address: "127.0.0.1", Port: port, Instance: id, Version: version, Health: h}
}

func state(pols map[string]policy.Service) catalog.State {
	st := catalog.NewState()
	st.Services["backend"] = []catalog.Instance{
		inst("backend-1", "v1", 2001, catalog.Healthy),
		inst("backend-2", "v1", 2002, catalog.Unhealthy),
		inst("backend-3", "v2", 2003, catalog.Degraded),
	}
	st.Services["frontend"] = []catalog.Instance{inst("frontend-1", "v1", 3001, catalog.Healthy)}
	for k, v := range pols {
		st.Policies[k] = v
	}
	return st
}

func TestEDSClusterFromPolicy(t *testing.T) {
	od := &policy.OutlierDetection{Consecutive5xx: 3, IntervalMS: 1000, BaseEjectionTimeMS: 60000, MaxEjectionPercent: 50}
	cb := &policy.CircuitBreaker{MaxConnections: 1, MaxPendingRequests: 2, MaxRequests: 3, MaxRetries: 4}
	cases := []struct {
		name  string
		pol   policy.Service
		check func(t *testing.T, c *clusterv3.Cluster)
	}{
		{"round robin default", policy.DefaultService(), func(t *testing.T, c *clusterv3.Cluster) {
			if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN || c.GetOutlierDetection() != nil || c.GetCircuitBreakers() != nil {
				t.Fatal(c)
			}
		}},
		{"least request", policy.Service{LBPolicy: "LEAST_REQUEST"}, func(t *testing.T, c *clusterv3.Cluster) {
			if c.GetLbPolicy() != clusterv3.Cluster_LEAST_REQUEST {
				t.Fatal(c.GetLbPolicy())
			}
		}},
		{"maglev", policy.Service{LBPolicy: "MAGLEV"}, func(t *testing.T, c *clusterv3.Cluster) {
			if c.GetLbPolicy() != clusterv3.Cluster_MAGLEV {
				t.Fatal(c.GetLbPolicy())
			}
		}},
		{"outlier detection", policy.Service{LBPolicy: "ROUND_ROBIN", OutlierDetection: od}, func(t *testing.T, c *clusterv3.Cluster) {
			o := c.GetOutlierDetection()
			if o.GetConsecutive_5Xx().GetValue() != 3 || o.GetInterval().AsDuration() != time.Second ||
				o.GetBaseEjectionTime().AsDuration() != time.Minute || o.GetMaxEjectionPercent().GetValue() != 50 {
				t.Fatal(o)
			}
		}},
		{"circuit breaker", policy.Service{LBPolicy: "RANDOM", CircuitBreaker: cb}, func(t *testing.T, c *clusterv3.Cluster) {
			th := c.GetCircuitBreakers().GetThresholds()
			if len(th) != 1 || th[0].GetPriority() != corev3.RoutingPriority_DEFAULT || th[0].GetMaxConnections().GetValue() != 1 ||
				th[0].GetMaxPendingRequests().GetValue() != 2 || th[0].GetMaxRequests().GetValue() != 3 || th[0].GetMaxRetries().GetValue() != 4 {
				t.Fatal(th)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := EDSCluster("backend", c.pol)
			if err := cl.ValidateAll(); err != nil {
				t.Fatal(err)
			}
			if cl.GetType() != clusterv3.Cluster_EDS || cl.GetEdsClusterConfig().GetServiceName() != "backend" ||
				cl.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || cl.GetConnectTimeout().AsDuration() != time.Second {
				t.Fatal(cl)
			}
			if p := cl.GetCommonLbConfig().GetHealthyPanicThreshold(); p == nil || p.GetValue() != 0 {
				t.Fatal("panic threshold must be set to 0")
			}
			c.check(t, cl)
		})
	}
}

func TestRouteActionFromPolicy(t *testing.T) {
	cases := []struct {
		name        string
		pol         policy.Service
		cluster     string
		weights     map[string]uint32
		retries     bool
		perTry      time.Duration
		hashHeader  string
		wantTimeout time.Duration
	}{
		{name: "default", pol: policy.DefaultService(), cluster: "backend", wantTimeout: 15 * time.Second},
		{name: "weights by version", pol: policy.Service{LBPolicy: "ROUND_ROBIN", TimeoutMS: 500, Weights: map[string]uint32{"v2": 10, "v1": 90}},
			weights: map[string]uint32{"backend~v1": 90, "backend~v2": 10}, wantTimeout: 500 * time.Millisecond},
		{name: "retries", pol: policy.Service{LBPolicy: "ROUND_ROBIN", TimeoutMS: 1000,
			Retries: &policy.Retries{RetryOn: "5xx", NumRetries: 2, PerTryTimeoutMS: 300}},
			cluster: "backend", retries: true, perTry: 300 * time.Millisecond, wantTimeout: time.Second},
		{name: "retries without per-try timeout", pol: policy.Service{LBPolicy: "ROUND_ROBIN", TimeoutMS: 1000,
			Retries: &policy.Retries{RetryOn: "reset", NumRetries: 0}}, cluster: "backend", retries: true, wantTimeout: time.Second},
		{name: "ring hash on header", pol: policy.Service{LBPolicy: "RING_HASH", HashHeader: "x-user", TimeoutMS: 1000},
			cluster: "backend", hashHeader: "x-user", wantTimeout: time.Second},
		{name: "hash header ignored for round robin", pol: policy.Service{LBPolicy: "ROUND_ROBIN", HashHeader: "x-user", TimeoutMS: 1000},
			cluster: "backend", wantTimeout: time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ra := RouteAction("backend", c.pol)
			if err := ra.ValidateAll(); err != nil {
				t.Fatal(err)
			}
			if ra.GetTimeout().AsDuration() != c.wantTimeout {
				t.Fatalf("timeout %v", ra.GetTimeout().AsDuration())
			}
			if ra.GetCluster() != c.cluster {
				t.Fatalf("cluster %q", ra.GetCluster())
			}
			got := map[string]uint32{}
			var order []string
			for _, w := range ra.GetWeightedClusters().GetClusters() {
				got[w.GetName()] = w.GetWeight().GetValue()
				order = append(order, w.GetName())
			}
			if len(got) != len(c.weights) {
				t.Fatalf("weights %v", got)
			}
			for k, v := range c.weights {
				if got[k] != v {
					t.Fatalf("weights %v", got)
				}
			}
			if len(order) == 2 && order[0] != "backend~v1" {
				t.Fatalf("weighted clusters not sorted by version: %v", order)
			}
			rp := ra.GetRetryPolicy()
			if (rp != nil) != c.retries {
				t.Fatalf("retry policy %v", rp)
			}
			if rp != nil {
				if rp.GetRetryOn() != c.pol.Retries.RetryOn || rp.GetNumRetries() == nil || rp.GetNumRetries().GetValue() != c.pol.Retries.NumRetries {
					t.Fatal(rp)
				}
				if len(rp.GetRetryHostPredicate()) != 1 || rp.GetRetryHostPredicate()[0].GetName() != "envoy.retry_host_predicates.previous_hosts" ||
					rp.GetHostSelectionRetryMaxAttempts() != 5 {
					t.Fatal("previous-hosts predicate missing", rp)
				}
				if (rp.GetPerTryTimeout() != nil) != (c.perTry > 0) || rp.GetPerTryTimeout().AsDuration() != c.perTry {
					t.Fatalf("per try timeout %v", rp.GetPerTryTimeout())
				}
			}
			hp := ra.GetHashPolicy()
			if c.hashHeader == "" && len(hp) != 0 || c.hashHeader != "" && (len(hp) != 1 || hp[0].GetHeader().GetHeaderName() != c.hashHeader) {
				t.Fatalf("hash policy %v", hp)
			}
		})
	}
}

func TestLoadAssignmentGroupsAndMarksHealth(t *testing.T) {
	a := inst("b-a", "v1", 1, catalog.Healthy)
	b := inst("b-b", "v1", 2, catalog.Unhealthy)
	c := inst("b-c", "v2", 3, catalog.Degraded)
	c.Priority = 1
	d := inst("b-d", "v1", 4, catalog.Healthy)
	d.Zone = "z1"
	cla := LoadAssignment("backend", []catalog.Instance{c, d, b, a})
	if err := cla.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	eps := cla.GetEndpoints()
	if len(eps) != 3 {
		t.Fatalf("groups %v", eps)
	}
	// priority 0 (zone "" then z1), then priority 1
	if eps[0].GetPriority() != 0 || eps[0].GetLocality() != nil || eps[1].GetLocality().GetZone() != "z1" || eps[2].GetPriority() != 1 {
		t.Fatal(eps)
	}
	first := eps[0].GetLbEndpoints()
	if len(first) != 2 || first[0].GetEndpoint().GetHostname() != "b-a" || first[1].GetHealthStatus() != corev3.HealthStatus_UNHEALTHY {
		t.Fatal(first)
	}
	if eps[2].GetLbEndpoints()[0].GetHealthStatus() != corev3.HealthStatus_DEGRADED {
		t.Fatal("degraded")
	}
	md := first[0].GetMetadata().GetFilterMetadata()["meshbed"].GetFields()
	if md["instance"].GetStringValue() != "b-a" || md["version"].GetStringValue() != "v1" {
		t.Fatal(md)
	}
	if sa := first[0].GetEndpoint().GetAddress().GetSocketAddress(); sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 1 {
		t.Fatal(sa)
	}
}

func TestClusterLoadAssignmentByVersion(t *testing.T) {
	st := state(nil)
	if n := len(ClusterLoadAssignment("backend", st.Services).GetEndpoints()[0].GetLbEndpoints()); n != 3 {
		t.Fatalf("all versions: %d", n)
	}
	v2 := ClusterLoadAssignment("backend~v2", st.Services)
	if v2.GetClusterName() != "backend~v2" || len(v2.GetEndpoints()) != 1 || v2.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetHostname() != "backend-3" {
		t.Fatal(v2)
	}
	if n := len(ClusterLoadAssignment("nosuch", st.Services).GetEndpoints()); n != 0 {
		t.Fatal("unknown service must be an empty assignment")
	}
}

func names[T interface{ GetName() string }](items []T) []string {
	out := make([]string, 0, len(items))
	for _, i := range items {
		out = append(out, i.GetName())
	}
	return out
}

func TestNodeResourcesByRole(t *testing.T) {
	weighted := map[string]policy.Service{"backend": {LBPolicy: "ROUND_ROBIN", TimeoutMS: 1000, Weights: map[string]uint32{"v1": 90, "v2": 10}}}
	cases := []struct {
		name      string
		meta      nodemeta.Meta
		pols      map[string]policy.Service
		clusters  []string
		listeners []string
		routes    []string
	}{
		{"frontend sidecar", sidecar(), nil, []string{"local_app", "backend"}, []string{"inbound", "outbound"}, []string{"inbound", "outbound"}},
		{"frontend sidecar, weighted backend", sidecar(), weighted, []string{"local_app", "backend", "backend~v1", "backend~v2"},
			[]string{"inbound", "outbound"}, []string{"inbound", "outbound"}},
		{"leaf sidecar", nodemeta.Meta{Role: "sidecar", Service: "backend", Instance: "backend-1", ListenAddress: "127.0.0.1",
			InboundPort: 1, AppAddress: "127.0.0.1:2", OutboundPort: 3}, nil, []string{"local_app"}, []string{"inbound"}, []string{"inbound"}},
		{"ingress", ingress(), nil, []string{"frontend"}, []string{"ingress"}, []string{"ingress"}},
		{"reserved names are never clusters", nodemeta.Meta{Role: "sidecar", Service: "x", Instance: "x", Upstreams: []string{"xds_cluster", "backend"}},
			nil, []string{"backend"}, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := state(c.pols)
			cls, lis, rcs := Clusters(c.meta, st), Listeners(c.meta, st.Mesh), Routes(c.meta, st)
			if got := names(cls); !equal(got, c.clusters) {
				t.Fatalf("clusters %v want %v", got, c.clusters)
			}
			if got := names(lis); !equal(got, c.listeners) {
				t.Fatalf("listeners %v want %v", got, c.listeners)
			}
			if got := names(rcs); !equal(got, c.routes) {
				t.Fatalf("routes %v want %v", got, c.routes)
			}
			var eds []string
			for _, e := range Endpoints(c.meta, st) {
				eds = append(eds, e.GetClusterName())
			}
			var wantEDS []string
			for _, n := range c.clusters {
				if n != LocalApp {
					wantEDS = append(wantEDS, n)
				}
			}
			if !equal(eds, wantEDS) {
				t.Fatalf("endpoints %v want %v", eds, wantEDS)
			}
			var all []validator
			for _, x := range cls {
				all = append(all, x)
			}
			for _, x := range lis {
				all = append(all, x)
			}
			for _, x := range rcs {
				all = append(all, x)
			}
			for _, v := range all {
				if err := v.ValidateAll(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRoutesMatchHostAndPrefix(t *testing.T) {
	st := state(map[string]policy.Service{"frontend": {LBPolicy: "ROUND_ROBIN", TimeoutMS: 2500}})
	out := OutboundRoutes(sidecar(), st)
	vh := out.GetVirtualHosts()[0]
	if vh.GetName() != "backend" || !equal(vh.GetDomains(), []string{"backend", "backend:*"}) || vh.GetRoutes()[0].GetMatch().GetPrefix() != "/" {
		t.Fatal(vh)
	}
	in := InboundRoutes(sidecar(), st)
	ra := in.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
	if ra.GetCluster() != LocalApp || ra.GetTimeout().AsDuration() != 2500*time.Millisecond {
		t.Fatal("inbound uses the node's own service timeout", ra)
	}
	ing := IngressRoutes(ingress(), st)
	r := ing.GetVirtualHosts()[0].GetRoutes()[0]
	if !equal(ing.GetVirtualHosts()[0].GetDomains(), []string{"*"}) || r.GetMatch().GetPrefix() != "/" || r.GetRoute().GetCluster() != "frontend" {
		t.Fatal(ing)
	}
}

func TestHTTPConnectionManagerTracingAndRequestID(t *testing.T) {
	m := ingress()
	m.AccessLogPath = "/tmp/ingress.log"
	h := HTTPConnectionManager("ingress", "ingress", m, 12.5)
	if err := h.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if h.GetRds().GetRouteConfigName() != "ingress" || !h.GetGenerateRequestId().GetValue() {
		t.Fatal(h)
	}
	var u uuidv3.UuidRequestIdConfig
	if err := h.GetRequestIdExtension().GetTypedConfig().UnmarshalTo(&u); err != nil || u.GetPackTraceReason() == nil || u.GetPackTraceReason().GetValue() {
		t.Fatal("uuid request id with pack_trace_reason false", err)
	}
	tr := h.GetTracing()
	if tr.GetProvider().GetName() != "envoy.tracers.opentelemetry" || tr.GetRandomSampling().GetValue() != 12.5 || tr.GetSpawnUpstreamSpan().GetValue() {
		t.Fatal(tr)
	}
	if h.GetAccessLog()[0].GetName() != "envoy.access_loggers.file" {
		t.Fatal(h.GetAccessLog())
	}
	lis := HTTPListener("ingress", "127.0.0.1", 8080, corev3.TrafficDirection_OUTBOUND, m, 12.5)
	var back hcmv3.HttpConnectionManager
	if err := lis.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&back); err != nil || !proto.Equal(&back, h) {
		t.Fatal("listener must carry the HCM", err)
	}
}

func TestIngressSamplingFromMeshSidecarsAlways100(t *testing.T) {
	st := state(nil)
	st.Mesh = policy.Mesh{SamplingPercent: 5}
	sampling := func(m nodemeta.Meta) float64 {
		var h hcmv3.HttpConnectionManager
		if err := Listeners(m, st.Mesh)[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		return h.GetTracing().GetRandomSampling().GetValue()
	}
	if got := sampling(ingress()); got != 5 {
		t.Fatalf("ingress sampling %v", got)
	}
	if got := sampling(sidecar()); got != 100 {
		t.Fatalf("sidecar sampling %v", got)
	}
}

func TestStaticClusterAddress(t *testing.T) {
	cases := []struct {
		in   string
		host string
		port uint32
	}{{"127.0.0.1:21000", "127.0.0.1", 21000}, {"[::1]:80", "::1", 80}, {":9", "127.0.0.1", 9}}
	for _, c := range cases {
		sa := StaticCluster(LocalApp, c.in).GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if sa.GetAddress() != c.host || sa.GetPortValue() != c.port {
			t.Errorf("%s -> %s:%d", c.in, sa.GetAddress(), sa.GetPortValue())
		}
	}
}

func TestValidatePolicy(t *testing.T) {
	if err := ValidatePolicy("backend", policy.Service{LBPolicy: "ROUND_ROBIN", TimeoutMS: 1}); err != nil {
		t.Fatal(err)
	}
	bad := policy.Service{LBPolicy: "ROUND_ROBIN", TimeoutMS: 1, Retries: &policy.Retries{RetryOn: "5xx", NumRetries: 1}}
	bad.OutlierDetection = &policy.OutlierDetection{IntervalMS: 0, BaseEjectionTimeMS: 1}
	if err := ValidatePolicy("backend", bad); err == nil {
		t.Fatal("a zero outlier interval must fail validation")
	}
}

func TestSnapshotVersions(t *testing.T) {
	base := state(nil)
	s1, err := Build(sidecar(), base)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := Build(sidecar(), base.Clone())
	for _, typ := range TypeOrder {
		if s1.GetVersion(typ) != s2.GetVersion(typ) || s1.GetVersion(typ) == "" {
			t.Fatalf("%s: versions must be content hashes: %q vs %q", Short[typ], s1.GetVersion(typ), s2.GetVersion(typ))
		}
	}

	// an endpoint change moves EDS only
	moved := base.Clone()
	moved.Services["backend"] = moved.Services["backend"][:2]
	s3, _ := Build(sidecar(), moved)
	if s3.GetVersion(resource.EndpointType) == s1.GetVersion(resource.EndpointType) {
		t.Fatal("EDS version must change with endpoints")
	}
	for _, typ := range []string{resource.ClusterType, resource.ListenerType, resource.RouteType} {
		if s3.GetVersion(typ) != s1.GetVersion(typ) {
			t.Fatalf("%s must not change with endpoints", Short[typ])
		}
	}

	// a service the node does not use changes nothing
	other := base.Clone()
	other.Services["frontend"] = nil
	other.Policies["frontend"] = policy.Service{LBPolicy: "RANDOM", TimeoutMS: 9}
	s4, _ := Build(sidecar(), other)
	if s4.GetVersion(resource.EndpointType) != s1.GetVersion(resource.EndpointType) || s4.GetVersion(resource.ClusterType) != s1.GetVersion(resource.ClusterType) {
		t.Fatal("unrelated changes must keep versions")
	}

	// a cluster change re-versions its endpoints (Envoy warms the new cluster and waits for them)
	lb := base.Clone()
	lb.Policies["backend"] = policy.Service{LBPolicy: "LEAST_REQUEST", TimeoutMS: 15000}
	s5, _ := Build(sidecar(), lb)
	if s5.GetVersion(resource.ClusterType) == s1.GetVersion(resource.ClusterType) {
		t.Fatal("CDS must change")
	}
	if s5.GetVersionMap(resource.EndpointType)["backend"] == s1.GetVersionMap(resource.EndpointType)["backend"] {
		t.Fatal("the backend assignment must get a new version when its cluster changes")
	}
	if s5.GetVersion(resource.RouteType) != s1.GetVersion(resource.RouteType) {
		t.Fatal("an LB policy change must not touch routes")
	}
	if s5.GetVersionMap(resource.ClusterType)[LocalApp] != s1.GetVersionMap(resource.ClusterType)[LocalApp] {
		t.Fatal("untouched clusters keep their resource version")
	}
	if err := s5.ConstructVersionMap(); err != nil {
		t.Fatal(err)
	}
	if got := s5.Names(resource.ClusterType); !equal(got, []string{"backend", "local_app"}) {
		t.Fatal(got)
	}
}
