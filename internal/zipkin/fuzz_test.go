package zipkin

import (
	"testing"
)

// FuzzZipkinJSON feeds arbitrary bytes to the Zipkin v2 decoder: it must
// never panic, and what it accepts has non-zero ids and an end not before
// its start. Seeds are in testdata/fuzz/FuzzZipkinJSON.
func FuzzZipkinJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		spans, err := ToModel(data)
		if _, partial := IsInvalidSpans(err); err != nil && !partial && spans != nil {
			t.Fatalf("spans returned with a whole-request error: %v", err)
		}
		for _, s := range spans {
			if s.TraceID.IsZero() || s.SpanID.IsZero() || s.EndUnixNano < s.StartUnixNano {
				t.Fatalf("invalid span accepted: %+v", s)
			}
		}
		// What is accepted converts back.
		if _, err := FromModel(spans); err != nil {
			t.Fatalf("accepted spans do not convert back: %v", err)
		}
	})
}
