// Package resources builds a node's Envoy xDS resources from its node
// metadata and the mesh state. Pure functions: no I/O and no clocks, so the
// config a node gets is a function of its inputs (unit-testable, hashable).
package resources

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"meshbed.local/controlplanes/go/internal/catalog"
	"meshbed.local/controlplanes/go/internal/nodemeta"
	"meshbed.local/controlplanes/go/internal/policy"
)

// Names shared with meshbed (the suites look clusters up by these).
const (
	LocalApp   = "local_app"
	VersionSep = "~"
)

// ReservedClusters are static in every bootstrap; never sent over CDS.
var ReservedClusters = map[string]bool{"xds_cluster": true, "jaeger_otlp": true}

// AccessLogFormat is the file access log line (request id and traceparent for the TRACE checks).
const AccessLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	"%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %DURATION%ms " +
	"rid=%REQ(X-REQUEST-ID)% tp=%REQ(TRACEPARENT)% up=%UPSTREAM_CLUSTER%\n"

var lbPolicies = map[string]clusterv3.Cluster_LbPolicy{
	"ROUND_ROBIN":   clusterv3.Cluster_ROUND_ROBIN,
	"LEAST_REQUEST": clusterv3.Cluster_LEAST_REQUEST,
	"RANDOM":        clusterv3.Cluster_RANDOM,
	"RING_HASH":     clusterv3.Cluster_RING_HASH,
	"MAGLEV":        clusterv3.Cluster_MAGLEV,
}

var healthStatus = map[catalog.Health]corev3.HealthStatus{
	catalog.Healthy:   corev3.HealthStatus_HEALTHY,
	catalog.Degraded:  corev3.HealthStatus_DEGRADED,
	catalog.Unhealthy: corev3.HealthStatus_UNHEALTHY,
}

func ms(n uint32) *durationpb.Duration {
	return durationpb.New(time.Duration(n) * time.Millisecond)
}

// pack is anypb.New with deterministic marshalling, so content hashes are stable.
func pack(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic("resources: cannot pack " + string(m.ProtoReflect().Descriptor().FullName()) + ": " + err.Error())
	}
	return a
}

func socket(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// ServiceClusters are the clusters a service needs: itself, plus svc~version per weighted version.
func ServiceClusters(service string, p policy.Service) []string {
	out := []string{service}
	for _, v := range p.Versions() {
		out = append(out, service+VersionSep+v)
	}
	return out
}

// SplitClusterName: "backend~v2" -> ("backend", "v2", true); "backend" -> ("backend", "", false).
func SplitClusterName(name string) (service, version string, versioned bool) {
	return strings.Cut(name, VersionSep)
}

// EDSCluster is an EDS-over-ADS cluster shaped by the service's policy, panic mode off.
func EDSCluster(name string, p policy.Service) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		ConnectTimeout:       ms(1000),
		LbPolicy:             lbPolicies[p.LBPolicy],
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		// 0: never route to unhealthy endpoints, even when most are unhealthy
		CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
	}
	if od := p.OutlierDetection; od != nil {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx:    wrapperspb.UInt32(od.Consecutive5xx),
			Interval:           ms(od.IntervalMS),
			BaseEjectionTime:   ms(od.BaseEjectionTimeMS),
			MaxEjectionPercent: wrapperspb.UInt32(od.MaxEjectionPercent),
		}
	}
	if cb := p.CircuitBreaker; cb != nil {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:           corev3.RoutingPriority_DEFAULT,
			MaxConnections:     wrapperspb.UInt32(cb.MaxConnections),
			MaxPendingRequests: wrapperspb.UInt32(cb.MaxPendingRequests),
			MaxRequests:        wrapperspb.UInt32(cb.MaxRequests),
			MaxRetries:         wrapperspb.UInt32(cb.MaxRetries),
		}}}
	}
	return c
}

// StaticCluster is a STATIC cluster with one endpoint (the sidecar's local app at host:port).
func StaticCluster(name, hostPort string) *clusterv3.Cluster {
	host, port := splitHostPort(hostPort)
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       ms(1000),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socket(host, port)}},
			}}}},
		},
	}
}

func splitHostPort(hostPort string) (string, uint32) {
	i := strings.LastIndex(hostPort, ":")
	host, portStr := "", hostPort
	if i >= 0 {
		host, portStr = hostPort[:i], hostPort[i+1:]
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		host = "127.0.0.1"
	}
	port, _ := strconv.ParseUint(portStr, 10, 16)
	return host, uint32(port)
}

// LoadAssignment groups endpoints by (priority, zone); unhealthy ones are kept but marked.
func LoadAssignment(name string, insts []catalog.Instance) *endpointv3.ClusterLoadAssignment {
	type group struct {
		zone string
		prio uint32
	}
	byGroup := map[group][]catalog.Instance{}
	var order []group
	for _, in := range insts {
		g := group{in.Zone, in.Priority}
		if _, ok := byGroup[g]; !ok {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], in)
	}
	slices.SortFunc(order, func(a, b group) int {
		return cmp.Or(cmp.Compare(a.prio, b.prio), cmp.Compare(a.zone, b.zone))
	})
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for _, g := range order {
		members := slices.Clone(byGroup[g])
		slices.SortFunc(members, func(a, b catalog.Instance) int {
			return cmp.Or(cmp.Compare(a.Instance, b.Instance), cmp.Compare(a.ID, b.ID))
		})
		loc := &endpointv3.LocalityLbEndpoints{Priority: g.prio}
		if g.zone != "" {
			loc.Locality = &corev3.Locality{Zone: g.zone}
		}
		for _, in := range members {
			md, _ := structpb.NewStruct(map[string]any{"instance": in.Instance, "version": in.Version})
			status, ok := healthStatus[in.Health]
			if !ok {
				status = corev3.HealthStatus_UNKNOWN
			}
			loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address:  socket(in.Address, in.Port),
					Hostname: in.Instance,
				}},
				HealthStatus: status,
				Metadata:     &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"meshbed": md}},
			})
		}
		cla.Endpoints = append(cla.Endpoints, loc)
	}
	return cla
}

// ClusterLoadAssignment is cluster name's endpoints: every instance of the
// service, or only those of one version for svc~version.
func ClusterLoadAssignment(name string, services map[string][]catalog.Instance) *endpointv3.ClusterLoadAssignment {
	svc, ver, versioned := SplitClusterName(name)
	insts := services[svc]
	if versioned {
		var only []catalog.Instance
		for _, in := range insts {
			if in.Version == ver {
				only = append(only, in)
			}
		}
		insts = only
	}
	return LoadAssignment(name, insts)
}

// RouteAction targets the service (or its weighted version clusters) with
// the policy's timeout, retries and hash policy.
func RouteAction(service string, p policy.Service) *routev3.RouteAction {
	ra := &routev3.RouteAction{Timeout: ms(p.TimeoutMS)}
	if len(p.Weights) > 0 {
		wc := &routev3.WeightedCluster{}
		for _, v := range p.Versions() {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name:   service + VersionSep + v,
				Weight: wrapperspb.UInt32(p.Weights[v]),
			})
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	} else {
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: service}
	}
	if r := p.Retries; r != nil {
		rp := &routev3.RetryPolicy{
			RetryOn:    r.RetryOn,
			NumRetries: wrapperspb.UInt32(r.NumRetries),
			// a retry goes to a host not tried yet for this request; without it
			// round robin can hand the retry straight back to the failing endpoint
			RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
				Name:       "envoy.retry_host_predicates.previous_hosts",
				ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: pack(&previoushostsv3.PreviousHostsPredicate{})},
			}},
			HostSelectionRetryMaxAttempts: 5,
		}
		if r.PerTryTimeoutMS > 0 {
			rp.PerTryTimeout = ms(r.PerTryTimeoutMS)
		}
		ra.RetryPolicy = rp
	}
	if (p.LBPolicy == "RING_HASH" || p.LBPolicy == "MAGLEV") && p.HashHeader != "" {
		ra.HashPolicy = []*routev3.RouteAction_HashPolicy{{
			PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: p.HashHeader}},
		}}
	}
	return ra
}

func prefixRoute(prefix string, action *routev3.RouteAction) *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: action},
	}
}

// InboundRoutes: everything to the local app, with the node's own service timeout.
func InboundRoutes(meta nodemeta.Meta, st catalog.State) *routev3.RouteConfiguration {
	ra := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: LocalApp},
		Timeout:          ms(st.Policy(meta.Service).TimeoutMS),
	}
	return &routev3.RouteConfiguration{Name: "inbound", VirtualHosts: []*routev3.VirtualHost{{
		Name: "inbound", Domains: []string{"*"}, Routes: []*routev3.Route{prefixRoute("/", ra)},
	}}}
}

// OutboundRoutes: one virtual host per upstream, matched by Host (svc, svc:*).
func OutboundRoutes(meta nodemeta.Meta, st catalog.State) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: "outbound"}
	for _, svc := range meta.Upstreams {
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    svc,
			Domains: []string{svc, svc + ":*"},
			Routes:  []*routev3.Route{prefixRoute("/", RouteAction(svc, st.Policy(svc)))},
		})
	}
	return rc
}

// IngressRoutes: one virtual host, a prefix route per meta.Routes entry.
func IngressRoutes(meta nodemeta.Meta, st catalog.State) *routev3.RouteConfiguration {
	vh := &routev3.VirtualHost{Name: "ingress", Domains: []string{"*"}}
	for _, r := range meta.Routes {
		vh.Routes = append(vh.Routes, prefixRoute(r.Prefix, RouteAction(r.Service, st.Policy(r.Service))))
	}
	return &routev3.RouteConfiguration{Name: "ingress", VirtualHosts: []*routev3.VirtualHost{vh}}
}

// HTTPConnectionManager: RDS over ADS, UUID request ids, OpenTelemetry tracing, a file access log.
func HTTPConnectionManager(name, routeConfig string, meta nodemeta.Meta, samplingPercent float64) *hcmv3.HttpConnectionManager {
	serviceName := meta.TraceService
	if serviceName == "" {
		serviceName = meta.Instance + "-envoy"
	}
	otel := &tracev3.OpenTelemetryConfig{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: meta.TraceCluster},
		}},
		ServiceName: serviceName,
	}
	logPath := meta.AccessLogPath
	if logPath == "" {
		logPath = "/dev/stdout"
	}
	fal := &filev3.FileAccessLog{
		Path: logPath,
		AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: AccessLogFormat},
			}},
		}},
	}
	return &hcmv3.HttpConnectionManager{
		StatPrefix:        name,
		CodecType:         hcmv3.HttpConnectionManager_AUTO,
		GenerateRequestId: wrapperspb.Bool(true),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: routeConfig,
		}},
		RequestIdExtension: &hcmv3.RequestIDExtension{
			TypedConfig: pack(&uuidv3.UuidRequestIdConfig{PackTraceReason: wrapperspb.Bool(false)}),
		},
		Tracing: &hcmv3.HttpConnectionManager_Tracing{
			Provider: &tracev3.Tracing_Http{
				Name:       "envoy.tracers.opentelemetry",
				ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: pack(otel)},
			},
			RandomSampling:    &typev3.Percent{Value: samplingPercent},
			SpawnUpstreamSpan: wrapperspb.Bool(false),
		},
		AccessLog: []*accesslogv3.AccessLog{{
			Name:       "envoy.access_loggers.file",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: pack(fal)},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(&routerv3.Router{})},
		}},
	}
}

// HTTPListener has one filter chain: an HCM using RDS route config `name`.
func HTTPListener(name, host string, port uint32, dir corev3.TrafficDirection, meta nodemeta.Meta, samplingPercent float64) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             name,
		Address:          socket(host, port),
		TrafficDirection: dir,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: pack(HTTPConnectionManager(name, name, meta, samplingPercent))},
		}}}},
	}
}

// Clusters is a node's CDS: local_app (sidecar) plus per-service and per-version EDS clusters.
func Clusters(meta nodemeta.Meta, st catalog.State) []*clusterv3.Cluster {
	var out []*clusterv3.Cluster
	if meta.Role == nodemeta.RoleSidecar && meta.AppAddress != "" {
		out = append(out, StaticCluster(LocalApp, meta.AppAddress))
	}
	for _, svc := range meta.Services() {
		p := st.Policy(svc)
		for _, name := range ServiceClusters(svc, p) {
			if !ReservedClusters[name] {
				out = append(out, EDSCluster(name, p))
			}
		}
	}
	return out
}

// Endpoints is a node's EDS: one assignment per EDS cluster in its CDS (possibly empty).
func Endpoints(meta nodemeta.Meta, st catalog.State) []*endpointv3.ClusterLoadAssignment {
	var out []*endpointv3.ClusterLoadAssignment
	for _, c := range Clusters(meta, st) {
		if c.GetType() == clusterv3.Cluster_EDS {
			out = append(out, ClusterLoadAssignment(c.GetName(), st.Services))
		}
	}
	return out
}

// Listeners is a node's LDS: inbound (+ outbound with upstreams) for a sidecar, ingress for an ingress.
func Listeners(meta nodemeta.Meta, mesh policy.Mesh) []*listenerv3.Listener {
	var out []*listenerv3.Listener
	switch meta.Role {
	case nodemeta.RoleSidecar:
		if meta.InboundPort != 0 {
			out = append(out, HTTPListener("inbound", meta.ListenAddress, meta.InboundPort, corev3.TrafficDirection_INBOUND, meta, 100))
		}
		if len(meta.Upstreams) > 0 && meta.OutboundPort != 0 {
			out = append(out, HTTPListener("outbound", meta.ListenAddress, meta.OutboundPort, corev3.TrafficDirection_OUTBOUND, meta, 100))
		}
	case nodemeta.RoleIngress:
		if meta.OutboundPort != 0 {
			out = append(out, HTTPListener("ingress", meta.ListenAddress, meta.OutboundPort, corev3.TrafficDirection_OUTBOUND, meta, mesh.SamplingPercent))
		}
	}
	return out
}

// Routes is a node's RDS: one route config per listener, named like it.
func Routes(meta nodemeta.Meta, st catalog.State) []*routev3.RouteConfiguration {
	var out []*routev3.RouteConfiguration
	switch meta.Role {
	case nodemeta.RoleSidecar:
		if meta.InboundPort != 0 {
			out = append(out, InboundRoutes(meta, st))
		}
		if len(meta.Upstreams) > 0 && meta.OutboundPort != 0 {
			out = append(out, OutboundRoutes(meta, st))
		}
	case nodemeta.RoleIngress:
		if meta.OutboundPort != 0 {
			out = append(out, IngressRoutes(meta, st))
		}
	}
	return out
}

// ValidatePolicy checks that Envoy would accept what the policy makes of a
// service (its clusters and route action), by the API's own validation rules.
func ValidatePolicy(service string, p policy.Service) error {
	for _, name := range ServiceClusters(service, p) {
		if err := EDSCluster(name, p).ValidateAll(); err != nil {
			return err
		}
	}
	return RouteAction(service, p).ValidateAll()
}
