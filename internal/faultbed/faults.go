package faultbed

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Class is a kind of fault the bed injects.
type Class string

// The fault classes.
const (
	// NetworkDelay slows every call into one service before it starts
	// (a bad link, a proxy, an accept backlog in front of it).
	NetworkDelay Class = "network_delay"
	// HostDelay delays all network traffic of one service's host, in and
	// out (what tc netem on its interface does): calls into it and the
	// calls it makes.
	HostDelay Class = "host_delay"
	// CPUContention makes one service's own work slower in every
	// operation.
	CPUContention Class = "cpu_contention"
	// PoolTooSmall makes requests of one operation queue for a lock or a
	// connection pool inside the service, before any child span.
	PoolTooSmall Class = "pool_too_small"
	// Exception makes one operation deep in the tree throw; the error
	// travels up to the entry span.
	Exception Class = "exception"
	// SlowDownstream slows a database a service calls (no spans of its
	// own: only the service's client span grows).
	SlowDownstream Class = "slow_downstream"
)

// Classes lists every fault class, latency ones first.
func Classes() []Class {
	return []Class{NetworkDelay, HostDelay, CPUContention, PoolTooSmall, SlowDownstream, Exception}
}

// ParseClass accepts a class name.
func ParseClass(s string) (Class, error) {
	for _, c := range Classes() {
		if string(c) == s {
			return c, nil
		}
	}
	return "", fmt.Errorf("unknown fault class %q", s)
}

// IllegalStateException is the error the exception fault throws; the SDK
// records its type name as exception.type, as Java agents record theirs.
type IllegalStateException struct{}

func (IllegalStateException) Error() string { return "injected fault: pool in illegal state" }

var errInjected error = IllegalStateException{}

// Fault is one injected fault: where, when and how strong. Service and
// Operation are the ground truth the ranking should name.
type Fault struct {
	Class     Class
	Service   string
	Operation string
	Start     time.Time
	// Delay is the added wait (network delay, mean queue wait, slower
	// dependency); Factor the CPU slowdown; Probability the share of calls
	// that throw.
	Delay       time.Duration
	Factor      float64
	Probability float64
}

// String describes the fault in one line.
func (f *Fault) String() string {
	switch f.Class {
	case CPUContention:
		return fmt.Sprintf("%s in %s (x%.1f)", f.Class, f.Service, f.Factor)
	case Exception:
		return fmt.Sprintf("%s in %s %s (%.0f %% of calls)", f.Class, f.Service, f.Operation, 100*f.Probability)
	case NetworkDelay:
		return fmt.Sprintf("%s in front of %s (+%s)", f.Class, f.Service, f.Delay.Round(time.Millisecond))
	case HostDelay:
		return fmt.Sprintf("%s on the host of %s (+%s each way)", f.Class, f.Service, f.Delay.Round(time.Millisecond))
	default:
		return fmt.Sprintf("%s at %s %s (+%s)", f.Class, f.Service, f.Operation, f.Delay.Round(time.Millisecond))
	}
}

// pickFault chooses a service (and operation) at random among those where
// the class makes sense, and the fault's strength.
func pickFault(rng *rand.Rand, class Class, ops map[string]*operation) Fault {
	keys := make([]string, 0, len(ops))
	for k := range ops {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var cands []*operation
	for _, k := range keys {
		o := ops[k]
		switch class {
		case NetworkDelay, HostDelay, Exception:
			// Not the entry service: no one calls it, and "deep down".
			if o.Service == "frontend" {
				continue
			}
		case SlowDownstream:
			if !hasDB(o) {
				continue
			}
		}
		cands = append(cands, o)
	}
	o := cands[rng.IntN(len(cands))]
	f := Fault{Class: class, Service: o.Service, Operation: o.Name}
	switch class {
	case NetworkDelay, HostDelay:
		f.Delay = randDur(rng, 15*time.Millisecond, 60*time.Millisecond)
		// The delay is in front of the whole service, whatever it serves.
		f.Operation = ""
	case CPUContention:
		f.Factor = 1.8 + 1.4*rng.Float64()
		// Every operation of the service slows; the entry one names it.
		f.Operation = ""
	case PoolTooSmall:
		f.Delay = randDur(rng, 8*time.Millisecond, 40*time.Millisecond)
	case SlowDownstream:
		var dbs []*dbCall
		for _, st := range o.Steps {
			for _, c := range st.Calls {
				if c.DB != nil {
					dbs = append(dbs, c.DB)
				}
			}
		}
		f.Operation = dbs[rng.IntN(len(dbs))].Name()
		f.Delay = randDur(rng, 15*time.Millisecond, 60*time.Millisecond)
	case Exception:
		f.Probability = 0.15 + 0.45*rng.Float64()
	}
	return f
}

func hasDB(o *operation) bool {
	for _, st := range o.Steps {
		for _, c := range st.Calls {
			if c.DB != nil {
				return true
			}
		}
	}
	return false
}

func randDur(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Float64()*float64(hi-lo))
}

// The hooks below return the fault's effect on the request being
// simulated, and nothing while the fault is not active.

// inFront is the extra time before a call from caller reaches callee.
func (f *Fault) inFront(s *sim, caller, callee string) time.Duration {
	switch {
	case !s.active:
		return 0
	case f.Class == NetworkDelay && callee == f.Service, f.Class == HostDelay && (callee == f.Service || caller == f.Service):
		return s.jitter(f.Delay)
	}
	return 0
}

// work is the time own work of service takes.
func (f *Fault) work(s *sim, service string, d time.Duration) time.Duration {
	if !s.active || f.Class != CPUContention || service != f.Service {
		return d
	}
	return time.Duration(float64(d) * f.Factor)
}

// queueWait is the wait for a lock or pool slot at the start of o.
func (f *Fault) queueWait(s *sim, o *operation) time.Duration {
	if !s.active || f.Class != PoolTooSmall || o.Service != f.Service || o.Name != f.Operation {
		return 0
	}
	// Queue waits are roughly exponential: most short, a few long.
	return time.Duration(-math.Log(1-s.rng.Float64()) * float64(f.Delay))
}

// throws reports whether o fails this time.
func (f *Fault) throws(s *sim, o *operation) bool {
	return s.active && f.Class == Exception && o.Service == f.Service && o.Name == f.Operation && s.rng.Float64() < f.Probability
}

// dependency is the time a database call of service takes.
func (f *Fault) dependency(s *sim, service string, db *dbCall, d time.Duration) time.Duration {
	if !s.active || f.Class != SlowDownstream || service != f.Service || db.Name() != f.Operation {
		return d
	}
	return d + s.jitter(f.Delay)
}
