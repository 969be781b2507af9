package traceql

import (
	"context"
	"fmt"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// bigTrace builds a 1,000-span trace: a root, 9 services each with a
// server span, and under each 110 client/db spans with 5 attributes.
func bigTrace() []model.Span {
	var fxs []fx
	fxs = append(fxs, fx{name: "root", service: "gateway", start: 0, end: 5000, kind: model.KindServer})
	for s := 0; s < 9; s++ {
		svc := fmt.Sprintf("svc-%d", s)
		srv := fmt.Sprintf("%s /handle", svc)
		fxs = append(fxs, fx{name: srv, service: svc, parent: "root", start: s * 400, end: s*400 + 390, kind: model.KindServer,
			attrs: model.Attrs{{Key: "http.route", Value: model.Str("/handle")}, {Key: "http.status_code", Value: model.Int(int64(200 + s%2*300))}}})
		for c := 0; c < 110; c++ {
			st := model.StatusUnset
			if c%17 == 0 {
				st = model.StatusError
			}
			fxs = append(fxs, fx{name: fmt.Sprintf("%s q%d", svc, c), service: svc, parent: srv, start: s*400 + c*3, end: s*400 + c*3 + 2 + c%5, kind: model.KindClient, status: st,
				attrs: model.Attrs{
					{Key: "db.system", Value: model.Str([]string{"postgres", "redis", "mysql"}[c%3])},
					{Key: "db.statement", Value: model.Str("SELECT * FROM t WHERE id = ?")},
					{Key: "net.peer.name", Value: model.Str("db.internal")},
					{Key: "rows", Value: model.Int(int64(c))},
					{Key: "cached", Value: model.Bool(c%2 == 0)},
				}})
		}
	}
	return build(0xcc, 0, fxs)
}

func BenchmarkParseEval1000(b *testing.B) {
	spans := bigTrace()
	if len(spans) != 1000 {
		b.Fatalf("trace has %d spans", len(spans))
	}
	for _, q := range []string{
		`{ span.db.system = "postgres" && duration > 3ms }`,
		`{ resource.service.name =~ "svc-[1-3]" && status = error }`,
		`{ kind = server && span.http.status_code >= 500 } >> { span.db.system = "redis" }`,
		`{ kind = client } | by(resource.service.name) | avg(duration) > 3ms`,
		`{ } | select(span.db.statement, span.rows)`,
	} {
		b.Run(q, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				pq, err := Parse(q)
				if err != nil {
					b.Fatal(err)
				}
				sets, err := pq.Eval(context.Background(), spans, nil)
				if err != nil {
					b.Fatal(err)
				}
				n = len(sets)
			}
			if n == 0 {
				b.Fatal("no match")
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	q := `{ resource.service.name = "cart" && span.http.status_code >= 500 && duration > 100ms } >> { span.db.system =~ "post.*" } | count() > 2 | select(span.db.statement)`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(q); err != nil {
			b.Fatal(err)
		}
	}
}
