// Package apiparam holds the query-parameter rules the HTTP APIs
// (internal/api/jaeger, internal/api/tempo, internal/api/v1) share, so a
// limit or a timestamp is bounded the same way on every endpoint.
package apiparam

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Client timestamps are bounded so that converting them to unix
// nanoseconds (int64: 1970 up to the year 2262) cannot overflow into a
// wrong range.
const (
	MaxUnixSeconds = math.MaxInt64 / int64(time.Second)
	MaxUnixMillis  = math.MaxInt64 / int64(time.Millisecond)
	MaxUnixMicros  = math.MaxInt64 / int64(time.Microsecond)
)

// Count reads a non-negative count such as a limit. Any larger value,
// however many digits it has, is capped at limitMax so one request cannot
// pull a whole store into memory; callers decide what 0 means.
func Count(s string, limitMax int) (int, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return limitMax, nil
	}
	if err != nil {
		return 0, fmt.Errorf("want a non-negative integer, got %q", s)
	}
	return int(min(n, uint64(limitMax))), nil
}

// CheckTime reports a time outside what unix nanoseconds hold.
func CheckTime(t time.Time) error {
	if t.Before(time.Unix(0, 0)) || t.After(time.Unix(0, math.MaxInt64)) {
		return fmt.Errorf("%s is outside the supported range 1970 to 2262", t.Format(time.RFC3339))
	}
	return nil
}
