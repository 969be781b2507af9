package baseline

import (
	"encoding/json"
	"net/http"
	"time"
)

// shiftJSON is one held-out key as GET /api/v1/baselines/shifts shows it.
type shiftJSON struct {
	Table     string `json:"table"`
	Service   string `json:"service,omitempty"`
	Operation string `json:"operation,omitempty"`
	DBSystem  string `json:"db_system,omitempty"`
	Shape     string `json:"shape,omitempty"`
	Reason    string `json:"reason"`
	Since     string `json:"since"`
	// UsualP50 and ShiftedP50 are ms (spans for span_count).
	UsualP50         float64 `json:"usual_p50"`
	ShiftedP50       float64 `json:"shifted_p50"`
	AnomalousWindows int     `json:"anomalous_windows"`
}

// RegisterRoutes mounts GET /api/v1/baselines/shifts: the operations,
// statement shapes and entry operations whose recent windows are held out
// of their baseline (an ongoing incident, or a shift not yet accepted).
func (b *Baselines) RegisterRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/baselines/shifts", b.handleShifts)
}

func (b *Baselines) handleShifts(w http.ResponseWriter, _ *http.Request) {
	out := []shiftJSON{}
	for _, s := range b.Shifts() {
		j := shiftJSON{Table: s.Table, Reason: s.Reason, Since: s.Since.Format(time.RFC3339), UsualP50: s.UsualP50,
			ShiftedP50: s.ShiftP50, AnomalousWindows: s.Anomalous}
		if s.Table == "statement" {
			j.DBSystem, j.Shape = s.A, s.B
		} else {
			j.Service, j.Operation = s.A, s.B
		}
		out = append(out, j)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"shifts": out})
}
