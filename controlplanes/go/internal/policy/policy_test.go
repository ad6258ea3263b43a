package policy

import (
	"strings"
	"testing"
)

func TestParseService(t *testing.T) {
	def := DefaultService()
	cases := []struct {
		name    string
		json    string
		check   func(t *testing.T, p Service)
		wantErr string
	}{
		{name: "empty object is the default", json: `{}`, check: func(t *testing.T, p Service) {
			if !p.Equal(def) {
				t.Fatalf("%+v", p)
			}
		}},
		{name: "lb policy is case-insensitive", json: `{"lb_policy": "least_request"}`, check: func(t *testing.T, p Service) {
			if p.LBPolicy != "LEAST_REQUEST" {
				t.Fatal(p.LBPolicy)
			}
		}},
		{name: "full policy", json: `{"lb_policy":"RING_HASH","hash_header":"x-user","weights":{"v1":90,"v2":10},
			"timeout_ms":250,"retries":{"num_retries":3},"outlier_detection":{"consecutive_5xx":3},
			"circuit_breaker":{"max_requests":8}}`, check: func(t *testing.T, p Service) {
			if p.HashHeader != "x-user" || p.Weights["v1"] != 90 || p.Weights["v2"] != 10 || p.TimeoutMS != 250 {
				t.Fatalf("%+v", p)
			}
			if *p.Retries != (Retries{RetryOn: "connect-failure,reset,5xx", NumRetries: 3}) {
				t.Fatalf("retries %+v", *p.Retries)
			}
			if *p.OutlierDetection != (OutlierDetection{3, 1000, 10000, 50}) {
				t.Fatalf("outlier %+v", *p.OutlierDetection)
			}
			if *p.CircuitBreaker != (CircuitBreaker{1024, 1024, 8, 3}) {
				t.Fatalf("cb %+v", *p.CircuitBreaker)
			}
			if got := p.Versions(); len(got) != 2 || got[0] != "v1" {
				t.Fatalf("versions %v", got)
			}
		}},
		{name: "null sub-policies are absent", json: `{"retries": null}`, check: func(t *testing.T, p Service) {
			if p.Retries != nil {
				t.Fatal("retries set")
			}
		}},
		{name: "unknown field", json: `{"lb": "RANDOM"}`, wantErr: "unknown field"},
		{name: "unknown lb policy", json: `{"lb_policy": "FASTEST"}`, wantErr: "lb_policy"},
		{name: "float weight", json: `{"weights": {"v1": 1.5}}`, wantErr: "weights"},
		{name: "bool weight", json: `{"weights": {"v1": true}}`, wantErr: "weights"},
		{name: "negative weight", json: `{"weights": {"v1": -1}}`, wantErr: "weights"},
		{name: "zero weights", json: `{"weights": {"v1": 0, "v2": 0}}`, wantErr: "more than 0"},
		{name: "zero timeout", json: `{"timeout_ms": 0}`, wantErr: "timeout_ms"},
		{name: "string timeout", json: `{"timeout_ms": "5s"}`, wantErr: "timeout_ms"},
		{name: "bad hash header", json: `{"hash_header": "x user"}`, wantErr: "hash_header"},
		{name: "unknown retries field", json: `{"retries": {"tries": 2}}`, wantErr: "retries.tries"},
		{name: "retry_on not a string", json: `{"retries": {"retry_on": 5}}`, wantErr: "retry_on"},
		{name: "ejection over 100%", json: `{"outlier_detection": {"max_ejection_percent": 150}}`, wantErr: "max_ejection_percent"},
		{name: "zero outlier interval", json: `{"outlier_detection": {"interval_ms": 0}}`, wantErr: "interval_ms"},
		{name: "not an object", json: `[1]`, wantErr: "mapping"},
		{name: "bad JSON", json: `{"lb_policy":`, wantErr: "bad JSON"},
		{name: "empty value", json: ``, wantErr: "empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := ParseService([]byte(c.json), "kv")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, p)
		})
	}
}

func TestParseMesh(t *testing.T) {
	cases := []struct {
		json    string
		want    float64
		wantErr bool
	}{
		{`{}`, 100, false},
		{`{"sampling_percent": 25}`, 25, false},
		{`{"sampling_percent": 0.5, "other": 1}`, 0.5, false},
		{`{"sampling_percent": "10"}`, 10, false},
		{`{"sampling_percent": 101}`, 0, true},
		{`{"sampling_percent": -1}`, 0, true},
		{`{"sampling_percent": "lots"}`, 0, true},
		{`"x"`, 0, true},
	}
	for _, c := range cases {
		m, err := ParseMesh([]byte(c.json))
		if (err != nil) != c.wantErr {
			t.Fatalf("%s: err %v", c.json, err)
		}
		if err == nil && m.SamplingPercent != c.want {
			t.Fatalf("%s: got %v", c.json, m.SamplingPercent)
		}
	}
}

func TestFromKVKeepsPreviousGoodPolicy(t *testing.T) {
	prev := map[string]Service{"backend": {LBPolicy: "RANDOM", TimeoutMS: 100}}
	prevMesh := Mesh{SamplingPercent: 10}
	res := FromKV([]Entry{
		{Key: "meshbed/services/backend", Value: []byte(`{"lb_policy": 7}`)},
		{Key: "meshbed/services/frontend", Value: []byte(`{"lb_policy": "MAGLEV"}`)},
		{Key: "meshbed/services/newbad", Value: []byte(`nope`)},
		{Key: "meshbed/services/", Value: []byte(`{}`)},
		{Key: "meshbed/mesh", Value: []byte(`{"sampling_percent": 500}`)},
		{Key: "meshbed/other", Value: []byte(`whatever`)},
	}, prev, prevMesh)
	if res.Services["backend"].LBPolicy != "RANDOM" {
		t.Fatalf("bad JSON did not keep the previous policy: %+v", res.Services["backend"])
	}
	if res.Services["frontend"].LBPolicy != "MAGLEV" {
		t.Fatalf("frontend %+v", res.Services["frontend"])
	}
	if _, ok := res.Services["newbad"]; ok {
		t.Fatal("a bad policy without a previous one must be absent (default)")
	}
	if len(res.Services) != 2 {
		t.Fatalf("services %v", res.Services)
	}
	if res.Mesh != prevMesh {
		t.Fatalf("mesh %+v", res.Mesh)
	}
	if len(res.Errors) != 3 {
		t.Fatalf("errors %v", res.Errors)
	}
}

func TestFromKVNoKeysMeansDefaults(t *testing.T) {
	res := FromKV(nil, map[string]Service{"a": {}}, Mesh{SamplingPercent: 3})
	if len(res.Services) != 0 || res.Mesh != DefaultMesh() {
		t.Fatalf("%+v", res)
	}
}
