// Package apiutil holds the request parsing and response helpers shared by
// the cross-trace analytics endpoints (findings, compare, attribution,
// groups), so that they accept times and durations exactly like the rest of
// /api/v1.
package apiutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tracedx/tracedx/internal/store"
)

// BadRequest marks an error caused by the request; handlers answer 400.
type BadRequest struct{ Err error }

func (b BadRequest) Error() string { return b.Err.Error() }
func (b BadRequest) Unwrap() error { return b.Err }

// Badf returns a BadRequest error.
func Badf(format string, args ...any) error { return BadRequest{fmt.Errorf(format, args...)} }

// WriteJSON writes v as JSON with the status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type errorBody struct {
	Error string `json:"error"`
}

// Fail answers an error: 400 for BadRequest, 404 for store.ErrNotFound,
// 499-like cancellations are not logged, 500 otherwise.
func Fail(w http.ResponseWriter, r *http.Request, err error) {
	var bad BadRequest
	switch {
	case errors.As(err, &bad):
		WriteJSON(w, http.StatusBadRequest, errorBody{err.Error()})
	case errors.Is(err, store.ErrNotFound):
		WriteJSON(w, http.StatusNotFound, errorBody{err.Error()})
	case errors.Is(err, r.Context().Err()) && r.Context().Err() != nil:
		WriteJSON(w, http.StatusServiceUnavailable, errorBody{"request cancelled: " + err.Error()})
	default:
		slog.Default().Error("analytics request failed", "path", r.URL.Path, "err", err)
		WriteJSON(w, http.StatusInternalServerError, errorBody{err.Error()})
	}
}

// ParseTime accepts RFC 3339, unix milliseconds, or a Go duration meaning
// "that long before now" (start=1h). Empty gives the zero time.
func ParseTime(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return time.Time{}, Badf("%s: unix milliseconds must not be negative", name)
		}
		return time.UnixMilli(n), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		if t.UnixNano() < 0 {
			return time.Time{}, Badf("%s: time before 1970", name)
		}
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, Badf("%s: want RFC 3339 (2026-01-02T15:04:05Z), unix milliseconds, or a duration ago (1h), got %q", name, v)
}

// ParseRange reads start/end (names given) into a store range.
func ParseRange(q url.Values, startName, endName string, now time.Time) (store.TimeRange, error) {
	var r store.TimeRange
	s, err := ParseTime(startName, q.Get(startName), now)
	if err != nil {
		return r, err
	}
	e, err := ParseTime(endName, q.Get(endName), now)
	if err != nil {
		return r, err
	}
	if !s.IsZero() {
		r.Start = uint64(s.UnixNano())
	}
	if !e.IsZero() {
		r.End = uint64(e.UnixNano())
	}
	if r.End != 0 && r.Start >= r.End {
		return r, Badf("%s must be before %s", startName, endName)
	}
	return r, nil
}

// ParseDuration accepts Go durations (250ms, 1.5s) or a bare number of
// milliseconds; it returns nanoseconds (0 when empty).
func ParseDuration(name, v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 {
			return 0, Badf("%s must not be negative", name)
		}
		return uint64(f * 1e6), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, Badf("%s: want a duration such as 250ms or 1.5s (or milliseconds), got %q", name, v)
	}
	return uint64(d), nil
}

// ParseLimit reads a positive integer capped at max (def when empty).
func ParseLimit(name, v string, def, max int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, Badf("%s: want a positive integer, got %q", name, v)
	}
	if n > max {
		n = max
	}
	return n, nil
}
