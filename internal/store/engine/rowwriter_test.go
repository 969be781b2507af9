package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/model"
)

// randomRows fills every field of every row, leaving each field at its
// zero value (null, for optional columns) about half the time, with few
// distinct values in some columns and many in others, so that pages mix
// nulls and values and some dictionaries overflow.
func randomRows(rng *rand.Rand, n int) []spanRow {
	rows := make([]spanRow, n)
	t := reflect.TypeFor[spanRow]()
	for i := range rows {
		v := reflect.ValueOf(&rows[i]).Elem()
		for j := range t.NumField() {
			if rng.IntN(2) == 0 {
				continue
			}
			card := 4
			if j%3 == 0 {
				card = 1 << 20
			}
			f := v.Field(j)
			switch f.Kind() {
			case reflect.String:
				f.SetString(fmt.Sprintf("value-%d", rng.IntN(card)))
			case reflect.Slice:
				b := make([]byte, rng.IntN(40))
				for k := range b {
					b[k] = byte(rng.IntN(card))
				}
				f.SetBytes(b)
			case reflect.Int64, reflect.Int32:
				f.SetInt(int64(rng.IntN(card)) - 1)
			case reflect.Bool:
				f.SetBool(true)
			case reflect.Array:
				for k := range f.Len() {
					f.Index(k).SetUint(uint64(rng.IntN(256)))
				}
			}
		}
	}
	return rows
}

// TestRowWriterWritesWhatGenericWriterWrites checks that rowWriter
// writes the file parquet-go's GenericWriter writes from the same rows
// with the same options, byte for byte (schema, encodings, pages,
// dictionaries, fallbacks to plain), wherever GenericWriter writes every
// null as null: in batches of whole 64-row chunks of these rows, where
// its null runs come out right (see TestSparseAttributeColumnsStayNull).
func TestRowWriterWritesWhatGenericWriterWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	rows := randomRows(rng, 64*80)
	for _, tc := range []struct {
		name                    string
		rowGroup, page, dictMax int
	}{
		{"default", int(rowsPerRowGroup), pageBufferSize, int(dictMaxBytes)},
		{"small", 64 * 11, 1 << 10, 4 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append(writerOptions(), parquet.MaxRowsPerRowGroup(int64(tc.rowGroup)),
				parquet.PageBufferSize(tc.page), parquet.DictionaryMaxBytes(int64(tc.dictMax)))
			var batches [][]spanRow
			for i := 0; i < len(rows); {
				n := min(len(rows)-i, 64*(1+rng.IntN(15)))
				batches = append(batches, rows[i:i+n])
				i += n
			}
			var want, got bytes.Buffer
			gw := parquet.NewGenericWriter[spanRow](&want, opts...)
			for _, b := range batches {
				if _, err := gw.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			if err := gw.Close(); err != nil {
				t.Fatal(err)
			}
			w := parquet.NewGenericWriter[spanRow](&got, opts...)
			rw := newRowWriter(w, int64(tc.rowGroup))
			for _, b := range batches {
				if err := rw.write(b); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("rowWriter wrote %d bytes, GenericWriter %d; they differ", got.Len(), want.Len())
			}
			f, err := parquet.OpenFile(bytes.NewReader(got.Bytes()), int64(got.Len()))
			if err != nil {
				t.Fatal(err)
			}
			if want := (len(rows) + tc.rowGroup - 1) / tc.rowGroup; len(f.RowGroups()) != want {
				t.Fatalf("%d row groups, want %d", len(f.RowGroups()), want)
			}
			read := make([]spanRow, len(rows))
			n, _ := parquet.NewGenericReader[spanRow](f).Read(read)
			if n != len(rows) {
				t.Fatalf("read %d rows, want %d", n, len(rows))
			}
			for i := range rows {
				w := rows[i]
				w.TraceID, w.TraceStart = [16]byte{}, 0
				if !reflect.DeepEqual(normRow(read[i]), normRow(w)) {
					t.Fatalf("row %d: read %+v, wrote %+v", i, read[i], w)
				}
			}
		})
	}
}

// normRow makes empty byte slices nil, as reading gives either.
func normRow(r spanRow) spanRow {
	for _, p := range []*[]byte{&r.ParentID, &r.Resource, &r.Attrs, &r.Events, &r.Links, &r.Dropped} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	return r
}

// TestSparseAttributeColumnsStayNull converts a trace in which one span
// in 64 has http.route and http.response.status_code, the second span by
// start (a pattern GenericWriter of parquet-go v0.32.0 gets wrong: it
// wrote the rest of the 64-row chunk as present empty strings and zeros,
// which column scans then take for values), and checks that the block's
// columns hold exactly the values given.
func TestSparseAttributeColumnsStayNull(t *testing.T) {
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	g := newGen(9)
	tid := g.id16()
	start := uint64(time.Now().Add(-time.Minute).UnixNano())
	var spans []model.Span
	for i := range 200 {
		s := model.Span{TraceID: tid, SpanID: g.id8(), Service: "svc", Name: "op",
			StartUnixNano: start + uint64(i)*1000, EndUnixNano: start + uint64(i)*1000 + 500}
		if i%64 == 1 {
			s.Attrs = model.Attrs{{Key: "http.route", Value: model.Str("/r")}, {Key: "http.response.status_code", Value: model.Int(200)}}
		}
		spans = append(spans, s)
	}
	convertSpans(t, e, spans)
	if len(e.blocks) != 1 || e.blocks[0].pf == nil {
		t.Fatalf("want one Parquet block, have %d blocks", len(e.blocks))
	}
	f := e.blocks[0].pf
	for _, name := range []string{"a_http_route", "a_http_response_status_code"} {
		col, ok := f.Schema().Lookup(name)
		if !ok {
			t.Fatalf("no column %s", name)
		}
		present := 0
		for _, rg := range f.RowGroups() {
			pages := rg.ColumnChunks()[col.ColumnIndex].Pages()
			for {
				p, err := pages.ReadPage()
				if err != nil {
					break
				}
				present += int(p.NumValues() - p.NumNulls())
			}
			pages.Close()
		}
		if want := 4; present != want {
			t.Errorf("%s: %d rows have a value, want %d", name, present, want)
		}
	}
}
