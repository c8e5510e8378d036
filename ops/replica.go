package ops

import "github.com/prometheus/client_golang/prometheus"

// ObserveReplica registers the metrics of a replica sharing the JetStream store:
// leadbridge_replica_info{replica} (always 1: the name `status` shows as POLLED BY, to
// join on this process's other series), and leadbridge_leases_held and
// leadbridge_replicas_live, read from leases at each scrape (the chatbot leases this
// replica holds, and the live replicas it counted, itself included). Call it once, with
// store.backend nats only.
func (m *Metrics) ObserveReplica(replica string, leases func() (held, replicas int)) {
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "leadbridge_replica_info",
		Help: "Always 1; the replica label names this replica as status shows it (POLLED BY), with store.backend nats.",
	}, []string{"replica"})
	info.WithLabelValues(replica).Set(1)
	m.reg.MustRegister(info,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "leadbridge_leases_held",
			Help: "Chatbot leases this replica holds (the chatbots it polls), with store.backend nats.",
		}, func() float64 { held, _ := leases(); return float64(held) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "leadbridge_replicas_live",
			Help: "Live replicas this replica counted at its last look (itself included); its fair share is ceil(chatbots / this), with store.backend nats.",
		}, func() float64 { _, n := leases(); return float64(n) }))
}
