package engine

import (
	"fmt"
	"reflect"
	"strings"
	"unsafe"

	"github.com/parquet-go/parquet-go"
)

// rowWriter writes spanRows into a Parquet file through parquet-go's
// column writers rather than GenericWriter.Write, so that nulls stay
// null: GenericWriter (parquet-go v0.32.0) splits a chunk of an optional
// column into null and value runs wrongly for some patterns (a value at
// the chunk's second row and none after it, for one) and writes the rest
// of the chunk as present empty strings or zeros, which column scans and
// search results then take for attribute values.
//
// It costs about what GenericWriter costs: the column buffers' per-value
// writes and dictionary inserts are the bulk either way. A chunk's column
// is one loop over the rows, the field's offset and kind resolved once,
// and a column null in the whole chunk (most dedicated attribute columns
// in most chunks) is handed a ready chunk of nulls.
//
// Otherwise the file is GenericWriter's, byte for byte (rowwriter_test.go
// checks): values go in chunks of writeChunkRows rows, after each of which
// a column whose buffer reached the page size flushes a page, as in
// GenericWriter, and row groups are cut at the same rows.
type rowWriter struct {
	w       *parquet.GenericWriter[spanRow]
	cols    []*parquet.ColumnWriter
	maxRows int64
	inGroup int64 // rows written to the current row group
	vals    []parquet.Value
}

// writeChunkRows is GenericWriter's rows per write (maxRowsPerWrite in
// parquet-go): a page is cut only between chunks, so keeping it keeps the
// pages, and so the file, as they were.
const writeChunkRows = 64

type colKind uint8

const (
	colString colKind = iota
	colBytes
	colInt64
	colInt32
	colBool
	colSpanID
)

// rowColumn is where a Parquet column's values are in a spanRow.
type rowColumn struct {
	off      uintptr
	kind     colKind
	optional bool
}

// rowColumns are spanRow's Parquet columns in the schema's column order.
var rowColumns = func() []rowColumn {
	schema := parquet.SchemaOf(spanRow{})
	paths := schema.Columns()
	cols := make([]rowColumn, len(paths))
	found := make([]bool, len(paths))
	t := reflect.TypeFor[spanRow]()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("parquet")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		leaf, ok := schema.Lookup(name)
		if !ok {
			panic(fmt.Sprintf("spanRow field %s: column %q not in schema", f.Name, name))
		}
		c := rowColumn{off: f.Offset, optional: strings.Contains(","+opts+",", ",optional,")}
		if c.optional != (leaf.MaxDefinitionLevel == 1) {
			panic(fmt.Sprintf("spanRow field %s: definition level %d", f.Name, leaf.MaxDefinitionLevel))
		}
		switch f.Type {
		case reflect.TypeFor[string]():
			c.kind = colString
		case reflect.TypeFor[[]byte]():
			c.kind = colBytes
		case reflect.TypeFor[int64]():
			c.kind = colInt64
		case reflect.TypeFor[int32]():
			c.kind = colInt32
		case reflect.TypeFor[bool]():
			c.kind = colBool
		case reflect.TypeFor[[8]byte]():
			c.kind = colSpanID
		default:
			panic(fmt.Sprintf("spanRow field %s: type %s has no column writer", f.Name, f.Type))
		}
		if c.optional && (c.kind == colInt32 || c.kind == colBool || c.kind == colSpanID) {
			panic(fmt.Sprintf("spanRow field %s: optional %s has no column writer", f.Name, f.Type))
		}
		cols[leaf.ColumnIndex], found[leaf.ColumnIndex] = c, true
	}
	for i, ok := range found {
		if !ok {
			panic(fmt.Sprintf("column %v has no spanRow field", paths[i]))
		}
	}
	return cols
}()

func newRowWriter(w *parquet.GenericWriter[spanRow], maxRows int64) *rowWriter {
	return &rowWriter{w: w, maxRows: maxRows, vals: make([]parquet.Value, writeChunkRows)}
}

// write appends rows to the file. The rows' strings and byte slices must
// stay valid only until it returns: the column buffers copy them.
func (rw *rowWriter) write(rows []spanRow) error {
	for len(rows) > 0 {
		if rw.inGroup >= rw.maxRows {
			if err := rw.w.Flush(); err != nil {
				return err
			}
			rw.inGroup = 0
		}
		n := min(int64(len(rows)), rw.maxRows-rw.inGroup)
		if err := rw.writeGroup(rows[:n]); err != nil {
			return err
		}
		rw.inGroup += n
		rows = rows[n:]
	}
	return nil
}

// writeGroup writes rows that all go to the current row group, a chunk
// of rows at a time through every column: a spanRow is nearly 1 KiB, and
// a chunk of them stays in the CPU cache while its columns are read out,
// where a batch read column by column would come from memory again for
// each column.
func (rw *rowWriter) writeGroup(rows []spanRow) error {
	// The column writers are the row group's; Flush keeps them.
	rw.cols = rw.w.ColumnWriters()
	for i := 0; i < len(rows); i += writeChunkRows {
		chunk := rows[i:min(i+writeChunkRows, len(rows))]
		for ci := range rowColumns {
			vals := rowColumns[ci].values(rw.vals, chunk, ci)
			if _, err := rw.cols[ci].WriteRowValues(vals); err != nil {
				return fmt.Errorf("column %d: %w", ci, err)
			}
		}
	}
	clear(rw.vals) // the values point into the rows
	return nil
}

// nullValues is a chunk of nulls: the zero Value is null at definition
// level 0.
var nullValues = make([]parquet.Value, writeChunkRows)

const rowSize = unsafe.Sizeof(spanRow{})

// values returns column ci's values of rows, in vals or, when an optional
// column is null in every row (most dedicated attribute columns in most
// chunks), nullValues. An optional column's zero value (empty string, nil
// slice, 0) is null, as for GenericWriter. Values of required columns
// carry no levels: a required column's buffer takes only their data.
func (c *rowColumn) values(vals []parquet.Value, rows []spanRow, ci int) []parquet.Value {
	p := unsafe.Add(unsafe.Pointer(unsafe.SliceData(rows)), c.off)
	vals = vals[:len(rows)]
	switch c.kind {
	case colString:
		if c.optional {
			if !anyNonZero[string](p, len(rows), func(s *string) bool { return len(*s) != 0 }) {
				return nullValues[:len(rows)]
			}
			for i := range vals {
				s := *(*string)(unsafe.Add(p, uintptr(i)*rowSize))
				if len(s) == 0 {
					vals[i] = parquet.Value{}
					continue
				}
				vals[i] = parquet.ByteArrayValue(unsafe.Slice(unsafe.StringData(s), len(s))).Level(0, 1, ci)
			}
			return vals
		}
		for i := range vals {
			s := *(*string)(unsafe.Add(p, uintptr(i)*rowSize))
			vals[i] = parquet.ByteArrayValue(unsafe.Slice(unsafe.StringData(s), len(s)))
		}
	case colBytes:
		if c.optional {
			if !anyNonZero[[]byte](p, len(rows), func(b *[]byte) bool { return *b != nil }) {
				return nullValues[:len(rows)]
			}
			for i := range vals {
				b := *(*[]byte)(unsafe.Add(p, uintptr(i)*rowSize))
				if b == nil {
					vals[i] = parquet.Value{}
					continue
				}
				vals[i] = parquet.ByteArrayValue(b).Level(0, 1, ci)
			}
			return vals
		}
		for i := range vals {
			vals[i] = parquet.ByteArrayValue(*(*[]byte)(unsafe.Add(p, uintptr(i)*rowSize)))
		}
	case colInt64:
		if c.optional {
			if !anyNonZero[int64](p, len(rows), func(v *int64) bool { return *v != 0 }) {
				return nullValues[:len(rows)]
			}
			for i := range vals {
				v := *(*int64)(unsafe.Add(p, uintptr(i)*rowSize))
				if v == 0 {
					vals[i] = parquet.Value{}
					continue
				}
				vals[i] = parquet.Int64Value(v).Level(0, 1, ci)
			}
			return vals
		}
		for i := range vals {
			vals[i] = parquet.Int64Value(*(*int64)(unsafe.Add(p, uintptr(i)*rowSize)))
		}
	case colInt32:
		for i := range vals {
			vals[i] = parquet.Int32Value(*(*int32)(unsafe.Add(p, uintptr(i)*rowSize)))
		}
	case colBool:
		for i := range vals {
			vals[i] = parquet.BooleanValue(*(*bool)(unsafe.Add(p, uintptr(i)*rowSize)))
		}
	case colSpanID:
		for i := range vals {
			vals[i] = parquet.FixedLenByteArrayValue((*[8]byte)(unsafe.Add(p, uintptr(i)*rowSize))[:])
		}
	}
	return vals
}

// anyNonZero reports whether the field at p in any of n rows is set. It
// only reads: most chunks of most optional columns are all null.
func anyNonZero[T any](p unsafe.Pointer, n int, set func(*T) bool) bool {
	for i := range n {
		if set((*T)(unsafe.Add(p, uintptr(i)*rowSize))) {
			return true
		}
	}
	return false
}
