package otlpconv

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// nextField reads every field as protowire does, on both sides of its
// one-byte fast paths: field number 0, lengths of 127 and 128, varints of
// one and two bytes, fixed64 values using all eight bytes, truncated
// contents, and tags of two bytes.
func TestNextFieldMatchesProtowire(t *testing.T) {
	long := bytes.Repeat([]byte{'x'}, 200)
	cases := map[string][]byte{
		"bytes 0":         protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), nil),
		"bytes 127":       protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), long[:127]),
		"bytes 128":       protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), long[:128]),
		"bytes truncated": append(protowire.AppendTag(nil, 1, protowire.BytesType), 5, 'a', 'b'),
		"varint 127":      protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 127),
		"varint 128":      protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 128),
		"field 0 bytes":   {0x02, 1, 'a'},
		"field 0 varint":  {0x00, 1},
		"tag of 2 bytes":  protowire.AppendBytes(protowire.AppendTag(nil, 16, protowire.BytesType), long[:3]),
		"fixed32":         protowire.AppendFixed32(protowire.AppendTag(nil, 4, protowire.Fixed32Type), 7),
		"fixed64":         protowire.AppendFixed64(protowire.AppendTag(nil, 4, protowire.Fixed64Type), 7),
		"tag only":        {0x0a},
		"fixed64 8 bytes": protowire.AppendFixed64(protowire.AppendTag(nil, 7, protowire.Fixed64Type), 0x8877665544332211),
		"fixed64 field 0": {0x01, 1, 2, 3, 4, 5, 6, 7, 8},
		"fixed64 cut":     append(protowire.AppendTag(nil, 7, protowire.Fixed64Type), 1, 2, 3, 4, 5),
		"fixed64 tag 2":   protowire.AppendFixed64(protowire.AppendTag(nil, 16, protowire.Fixed64Type), 1<<63),
	}
	for name, b := range cases {
		b = append(b, 0x08, 0x01) // a following field must be left for the next call
		var f field
		rest, err := nextField(b, &f)
		num, typ, n := protowire.ConsumeTag(b)
		var m int
		var u uint64
		var v []byte
		if n >= 0 {
			switch typ {
			case protowire.VarintType:
				u, m = protowire.ConsumeVarint(b[n:])
			case protowire.BytesType:
				v, m = protowire.ConsumeBytes(b[n:])
			case protowire.Fixed32Type:
				var x uint32
				x, m = protowire.ConsumeFixed32(b[n:])
				u = uint64(x)
			case protowire.Fixed64Type:
				u, m = protowire.ConsumeFixed64(b[n:])
			}
		}
		if wantErr := n < 0 || m < 0; wantErr != (err != nil) {
			t.Errorf("%s: error %v, protowire says error: %v", name, err, wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if f.num != num || f.typ != typ || f.u != u || !bytes.Equal(f.b, v) || len(rest) != len(b)-n-m {
			t.Errorf("%s: got field %d type %d u %d b %q rest %d, want %d %d %d %q %d", name, f.num, f.typ, f.u, f.b, len(rest), num, typ, u, v, len(b)-n-m)
		}
	}
}
