package jsonappend

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "tab\tnew\nline\rcr\bbs\fff", "\x00\x01\x1f\x7f",
		"<script>&amp;</script>", "line\u2028sep\u2029para", "bad \xff\xfe utf8 \xc3", "日本語 ✓ 😀",
		"\xed\xa0\x80 surrogate", "\U0010ffff max rune",
	} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(s); err != nil {
			t.Fatal(err)
		}
		got := append(String([]byte("prefix"), s), '\n')
		if !bytes.Equal(got, append([]byte("prefix"), want.Bytes()...)) {
			t.Errorf("%q: got %s, want %s", s, got, want.Bytes())
		}
	}
}

func FuzzStringMatchesEncodingJSON(f *testing.F) {
	f.Add("a<b>\u2028\xff\x01")
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := String(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	})
}
