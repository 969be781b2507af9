package zipkin

import (
	"os"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func load(t *testing.T) []model.Span {
	t.Helper()
	data, err := os.ReadFile("testdata/spans.json")
	if err != nil {
		t.Fatal(err)
	}
	spans, err := ToModel(data)
	if err != nil {
		t.Fatalf("ToModel: %v", err)
	}
	if len(spans) != 4 {
		t.Fatalf("got %d spans, want 4", len(spans))
	}
	return spans
}

func TestToModelFields(t *testing.T) {
	spans := load(t)
	s := spans[0]
	if got := s.TraceID.String(); got != "00000000000000005af7183fb1d4cf5f" {
		t.Errorf("64-bit trace id padded: %s", got)
	}
	if s.SpanID.String() != "6b221d5bc9e6496c" || !s.ParentSpanID.IsZero() {
		t.Errorf("ids: %s parent %s", s.SpanID, s.ParentSpanID)
	}
	if s.Name != "get /api" || s.Kind != model.KindServer || s.Service != "frontend" {
		t.Errorf("name/kind/service: %q %v %q", s.Name, s.Kind, s.Service)
	}
	if s.StartUnixNano != 1700000000000000000 || s.DurationNano() != 207000000 {
		t.Errorf("times: %d %d", s.StartUnixNano, s.DurationNano())
	}
	if s.StatusCode != model.StatusError || s.StatusMessage != "boom" {
		t.Errorf("status: %v %q", s.StatusCode, s.StatusMessage)
	}
	if _, ok := s.Attrs.Get("error"); ok {
		t.Error("error tag should become status, not an attribute")
	}
	if s.Resource.Str("service.name") != "frontend" {
		t.Errorf("resource: %v", s.Resource)
	}
	for k, want := range map[string]string{
		"http.method": "GET", "http.status_code": "500",
		AttrLocalAddress: "192.168.99.1", AttrLocalPort: "8080",
		AttrPeerAddress: "::1", AttrPeerPort: "63720",
	} {
		if got := s.Attrs.Str(k); got != want {
			t.Errorf("attr %s = %q, want %q", k, got, want)
		}
	}
	if len(s.Events) != 1 || s.Events[0].Name != "wr" || s.Events[0].TimeUnixNano != 1700000000001000000 {
		t.Errorf("events: %+v", s.Events)
	}

	c := spans[1]
	if c.Kind != model.KindClient || c.ParentSpanID.String() != "0020000000000001" {
		t.Errorf("client: %v %s", c.Kind, c.ParentSpanID)
	}
	if c.StatusCode != model.StatusError || c.StatusMessage != "" {
		t.Errorf("empty error tag: %v %q", c.StatusCode, c.StatusMessage)
	}
	if c.Attrs.Str(AttrPeerService) != "mysql" || c.Attrs.Str(AttrPeerPort) != "3306" {
		t.Errorf("remote endpoint: %v", c.Attrs)
	}

	sh := spans[2]
	if sh.ParentSpanID != c.SpanID || sh.SpanID == c.SpanID || sh.SpanID.IsZero() {
		t.Errorf("shared span should become child of client: id %s parent %s", sh.SpanID, sh.ParentSpanID)
	}
	if v, ok := sh.Attrs.Get(AttrShared); !ok || !v.Bool {
		t.Errorf("shared marker missing: %v", sh.Attrs)
	}
	if l := spans[3]; l.Kind != model.KindInternal || l.Service != model.UnknownService {
		t.Errorf("local span: %v %q", l.Kind, l.Service)
	}
}

func TestRoundTrip(t *testing.T) {
	spans := load(t)
	data, err := FromModel(spans)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"traceId":"5af7183fb1d4cf5f"`) {
		t.Errorf("64-bit id should stay 16 chars: %s", data)
	}
	if !strings.Contains(string(data), `"shared":true`) {
		t.Errorf("shared flag lost: %s", data)
	}
	back, err := ToModel(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(spans) {
		t.Fatalf("round trip: %d spans", len(back))
	}
	for i := range spans {
		a, b := spans[i], back[i]
		if a.TraceID != b.TraceID || a.SpanID != b.SpanID || a.ParentSpanID != b.ParentSpanID ||
			a.Name != b.Name || a.Kind != b.Kind || a.StartUnixNano != b.StartUnixNano ||
			a.EndUnixNano != b.EndUnixNano || a.StatusCode != b.StatusCode ||
			a.StatusMessage != b.StatusMessage || a.Service != b.Service ||
			len(a.Attrs) != len(b.Attrs) || len(a.Events) != len(b.Events) {
			t.Errorf("span %d differs after round trip:\n%+v\n%+v", i, a, b)
		}
		for _, at := range a.Attrs {
			if b.Attrs.Str(at.Key) != at.Value.AsString() {
				t.Errorf("span %d attr %s: %q vs %q", i, at.Key, at.Value.AsString(), b.Attrs.Str(at.Key))
			}
		}
	}
}

func TestInvalidSpansArePartial(t *testing.T) {
	in := `[
	 {"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"a2fb4a1d1a96d312","name":"ok"},
	 {"traceId":"463ac35c9f6413ad48485a3953bb6124463ac35c","id":"a2fb4a1d1a96d312","name":"long trace id"},
	 {"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312aa","name":"long span id"},
	 {"traceId":"zz3ac35c9f6413ad","id":"a2fb4a1d1a96d312","name":"not hex"},
	 {"traceId":"0000000000000000","id":"a2fb4a1d1a96d312","name":"zero"},
	 {"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312","parentId":"x","name":"bad parent"}
	]`
	spans, err := ToModel([]byte(in))
	if len(spans) != 1 || spans[0].Name != "ok" {
		t.Fatalf("valid spans: %+v", spans)
	}
	bad, ok := IsInvalidSpans(err)
	if !ok || bad.Rejected != 5 {
		t.Fatalf("want 5 rejected, got %v", err)
	}
	if !strings.Contains(err.Error(), "trace id") {
		t.Errorf("message should name the id: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	for _, in := range []string{`{`, `{"traceId":"1"}`, `[{"traceId":1}]`, ``} {
		spans, err := ToModel([]byte(in))
		if err == nil || spans != nil {
			t.Errorf("%q: want error, got %v %v", in, spans, err)
		}
		if _, partial := IsInvalidSpans(err); partial {
			t.Errorf("%q: malformed json must not be a partial error", in)
		}
	}
}

func TestOverflowingTimestampIsRejected(t *testing.T) {
	spans, err := ToModel([]byte(`[
	 {"traceId":"01","id":"02","timestamp":18446744073709551615,"duration":1},
	 {"traceId":"01","id":"03","timestamp":18446744073709551,"duration":18446744073709551},
	 {"traceId":"01","id":"04","timestamp":1700000000000000,"duration":5}]`))
	bad, ok := IsInvalidSpans(err)
	if !ok || bad.Rejected != 2 || len(spans) != 1 || spans[0].EndUnixNano != 1_700_000_000_000_005_000 {
		t.Fatalf("spans %+v err %v", spans, err)
	}
}

// A server half whose client never reported (the caller sent B3 headers
// from an uninstrumented client) keeps the parent it named, and writing it
// back without its client restores that parent.
func TestSharedServerKeepsItsParentWithoutClient(t *testing.T) {
	in := `[{"traceId":"0d1a94ebc9256244","parentId":"0d1a94ebc9256244","id":"dca1d27152851c1c","kind":"SERVER","shared":true,
		"name":"get /authentications","timestamp":1541485537000000,"duration":4000,"localEndpoint":{"serviceName":"auth"}}]`
	spans, err := ToModel([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := spans[0].Attrs.Str(AttrSharedParent); got != "0d1a94ebc9256244" {
		t.Fatalf("%s = %q", AttrSharedParent, got)
	}
	back := FromModelSpans(spans)
	if back[0].ID != "dca1d27152851c1c" || back[0].ParentID != "0d1a94ebc9256244" || !back[0].Shared || back[0].Tags[AttrSharedParent] != "" {
		t.Fatalf("written back as %+v", back[0])
	}
}

// Zipkin leaves timestamp out of spans it could not time. With annotations
// the span still has a time; without, its start stays 0 for readers to drop.
func TestMissingTimestampFromAnnotations(t *testing.T) {
	spans, err := ToModel([]byte(`[
	 {"traceId":"01","id":"02","duration":300,"annotations":[{"timestamp":1700000000000100,"value":"ws"},{"timestamp":1700000000000200,"value":"wr"}]},
	 {"traceId":"01","id":"03","annotations":[{"timestamp":1700000000000700,"value":"cs"},{"timestamp":1700000000000900,"value":"cr"}]},
	 {"traceId":"01","id":"04","duration":5}]`))
	if err != nil || len(spans) != 3 {
		t.Fatalf("spans %d err %v", len(spans), err)
	}
	for i, want := range [][2]uint64{
		{1_700_000_000_000_100_000, 1_700_000_000_000_400_000},
		{1_700_000_000_000_700_000, 1_700_000_000_000_900_000},
		{0, 0},
	} {
		if got := [2]uint64{spans[i].StartUnixNano, spans[i].EndUnixNano}; got != want {
			t.Errorf("span %d: times %v, want %v", i, got, want)
		}
	}
}

// SmartThings' platformapi reports late fragments of its spans: the same
// id with no timestamp, only a name and the local endpoint (84 in one
// recorded trace). They are that span, not spans of their own: their tags
// and annotations join it and no second span at time 0 is made.
func TestUntimedFragmentJoinsItsSpan(t *testing.T) {
	spans, err := ToModel([]byte(`[
	 {"traceId":"01","id":"02","kind":"SERVER","name":"post","timestamp":1700000000000000,"duration":800,"localEndpoint":{"serviceName":"platformapi"},"tags":{"http.path":"/x"}},
	 {"traceId":"01","id":"02","name":"post","localEndpoint":{"serviceName":"platformapi"},"tags":{"error":"boom","http.path":"/late"},"annotations":[{"timestamp":1700000000000500,"value":"flush"}]},
	 {"traceId":"01","id":"03","parentId":"02","name":"get","localEndpoint":{"serviceName":"platformapi"}}]`))
	if err != nil || len(spans) != 2 {
		t.Fatalf("spans %d err %v", len(spans), err)
	}
	s := spans[0]
	if s.StartUnixNano != 1_700_000_000_000_000_000 || s.StatusCode != model.StatusError || s.Attrs.Str("http.path") != "/x" ||
		len(s.Events) != 1 || s.Events[0].Name != "flush" {
		t.Errorf("merged span %+v", s)
	}
	// A span without timestamp and without a timed twin stays, untimed.
	if spans[1].StartUnixNano != 0 || spans[1].Name != "get" {
		t.Errorf("lone untimed span %+v", spans[1])
	}
}

// OpenTelemetry's Zipkin mapping (the Collector's receiver sample of a
// Finagle client) gives the status as otel.status_code without Brave's
// error tag.
func TestOtelStatusTags(t *testing.T) {
	spans, err := ToModel([]byte(`[
	 {"traceId":"01","id":"02","timestamp":1700000000000000,"duration":5,"tags":{"otel.status_code":"ERROR","otel.status_description":"Something failed"}},
	 {"traceId":"01","id":"03","timestamp":1700000000000000,"duration":5,"tags":{"otel.status_code":"OK"}},
	 {"traceId":"01","id":"04","timestamp":1700000000000000,"duration":5,"tags":{"otel.status_code":"ERROR","error":"timeout"}}]`))
	if err != nil || len(spans) != 3 {
		t.Fatalf("spans %d err %v", len(spans), err)
	}
	for i, want := range []struct {
		code model.StatusCode
		msg  string
	}{{model.StatusError, "Something failed"}, {model.StatusOK, ""}, {model.StatusError, "timeout"}} {
		if spans[i].StatusCode != want.code || spans[i].StatusMessage != want.msg {
			t.Errorf("span %d: status %v %q, want %v %q", i, spans[i].StatusCode, spans[i].StatusMessage, want.code, want.msg)
		}
	}
}
