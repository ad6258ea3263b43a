package nodemeta

import (
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFromStruct(t *testing.T) {
	cases := []struct {
		name    string
		in      map[string]any
		want    Meta
		wantErr string
	}{
		{
			name: "sidecar with upstreams",
			in: map[string]any{"role": "sidecar", "service": "frontend", "instance": "frontend-1",
				"listen_address": "127.0.0.1", "inbound_port": 21001.0, "app_address": "127.0.0.1:21000",
				"outbound_port": 21002.0, "upstreams": []any{"backend"}, "routes": []any{},
				"trace_cluster": "jaeger_otlp", "trace_service": "frontend-sidecar", "access_log_path": "/tmp/a.log"},
			want: Meta{Role: "sidecar", Service: "frontend", Instance: "frontend-1", ListenAddress: "127.0.0.1",
				InboundPort: 21001, AppAddress: "127.0.0.1:21000", OutboundPort: 21002, Upstreams: []string{"backend"},
				TraceCluster: "jaeger_otlp", TraceService: "frontend-sidecar", AccessLogPath: "/tmp/a.log"},
		},
		{
			name: "ingress with defaults",
			in: map[string]any{"role": "ingress", "service": "ingress", "instance": "ingress", "outbound_port": 8080.0,
				"routes": []any{map[string]any{"prefix": "/", "service": "frontend"}}},
			want: Meta{Role: "ingress", Service: "ingress", Instance: "ingress", ListenAddress: "127.0.0.1",
				OutboundPort: 8080, Routes: []Route{{"/", "frontend"}}, TraceCluster: "jaeger_otlp"},
		},
		{name: "no role", in: map[string]any{"service": "a", "instance": "a-1"}, wantErr: `missing "role"`},
		{name: "unknown role", in: map[string]any{"role": "gateway", "service": "a", "instance": "a-1"}, wantErr: "not sidecar or ingress"},
		{name: "bad port", in: map[string]any{"role": "sidecar", "service": "a", "instance": "a-1", "inbound_port": 70000.0}, wantErr: "not a port"},
		{name: "route without service", in: map[string]any{"role": "ingress", "service": "i", "instance": "i",
			"routes": []any{map[string]any{"prefix": "/"}}}, wantErr: "routes[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := FromStruct(mustStruct(t, c.in))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestFromNodeNeedsMetadata(t *testing.T) {
	if _, err := FromNode(&corev3.Node{Id: "n1"}); err == nil || !strings.Contains(err.Error(), "metadata.meshbed") {
		t.Fatalf("err = %v", err)
	}
	if _, err := FromNode(nil); err == nil {
		t.Fatal("nil node accepted")
	}
}

func TestServicesUniqueInOrder(t *testing.T) {
	ing := Meta{Role: RoleIngress, Routes: []Route{{"/a", "x"}, {"/b", "y"}, {"/c", "x"}}}
	if got := ing.Services(); !reflect.DeepEqual(got, []string{"x", "y"}) {
		t.Fatalf("ingress services %v", got)
	}
	sc := Meta{Role: RoleSidecar, Upstreams: []string{"b", "a", "b"}}
	if got := sc.Services(); !reflect.DeepEqual(got, []string{"b", "a"}) {
		t.Fatalf("sidecar services %v", got)
	}
}
