// Package localkafka runs a real, single-node Apache Kafka 4.x broker on
// loopback for integration tests, demos and benchmarks, without Docker.
//
// Fetch resolves the broker's jars from Maven Central once (with Maven and
// scripts/kafka/pom.xml, an embedded copy of which this package carries) and
// caches them; Start formats a KRaft combined broker+controller in a data
// dir, runs it in a JVM (java 17+ from JAVA_HOME or PATH) and waits until it
// serves. The JVM runs in its own process group and, on Linux, is killed by
// the kernel if the Go process dies, so a crashed test leaves no JVM behind.
//
// Typical test use:
//
//	b, err := localkafka.Start(ctx, localkafka.Options{Logger: slog.Default()})
//	if err != nil { t.Fatal(err) }
//	t.Cleanup(func() { _ = b.Stop() })
//	err = b.CreateTopic(ctx, "events", 4)
//	... kafka.Writer{Addr: kafka.TCP(b.Addr()), ...}
//
// The generated server.properties follows a minimal single-node KRaft setup:
// replication factors 1, group.initial.rebalance.delay.ms=0, one partition
// for each internal topic, and a 3 s broker session (500 ms heartbeats) so
// that a hard-killed broker can register again soon after Restart (with the
// default 9 s, the restarted node waits out its previous session). Every
// entry can be overridden with Options.ExtraConfig.
//
// Kill, Terminate and Restart stop and start the same broker on the same
// ports and data for chaos tests; FromEnvOrStart uses an existing cluster
// named by KAFKA_BROKERS instead when that is set. The broker's own output
// is in Broker.LogPath. scripts/kafka-local runs one in the foreground.
package localkafka
