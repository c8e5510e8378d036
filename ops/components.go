package ops

// component is a part leadbridge runs in its own process, such as the embedded NATS
// server, whose readiness /readyz reports.
type component struct {
	name  string
	ready func() error
}

// ComponentReadiness is one in-process component's part in readiness.
type ComponentReadiness struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// AddComponent makes readiness depend on the component name: ready answers nil when it
// is ready, else why not (an error without secrets). Call it before serving.
func (h *Health) AddComponent(name string, ready func() error) {
	h.components = append(h.components, component{name: name, ready: ready})
}

// checkComponents adds each component's readiness to r.
func (h *Health) checkComponents(r *Readiness) {
	for _, c := range h.components {
		cr := ComponentReadiness{Name: c.name, OK: true}
		if err := c.ready(); err != nil {
			cr.OK, cr.Error = false, cut(err.Error(), maxReasonError)
			r.Ready = false
			r.Reasons = append(r.Reasons, c.name+" is not ready: "+cr.Error)
		}
		r.Components = append(r.Components, cr)
	}
}
