// Package bench is leadbridge's pipeline benchmark (issue 14). It runs the real pipeline
// (`leadbridge once`, and `leadbridge run` for the idle cost) and a plain baseline
// program (bench/plain) as separate processes against in-process peers: a LeadList
// stand-in that streams its answer, an in-process nats-server with JetStream, and a
// webhook sink that counts distinct event ids. It prints records/s of each pipeline and
// their ratio, each process's peak RSS, and the CPU and memory of an idle daemon polling
// many chatbots whose records were all seen before. A run that lost or repeated a record
// fails instead of printing a figure.
//
// Everything lives in benchmarks, so plain `go test ./...` only runs the package's quick
// tests of its peers:
//
//	go test ./bench -run '^$' -bench . -benchtime 1x -timeout 30m
//	go test ./bench -run '^$' -bench Pipeline -benchtime 1x -bench.records 20000,100000
//	go test ./bench -run '^$' -bench Idle -benchtime 1x -bench.idle 1000,10000
//
// The package has no code outside its tests; the baseline is the command bench/plain.
package bench
