// Package integration holds the end-to-end suite: the built worker binary
// against a real Apache Kafka broker and the cohortsync emulator, under API
// faults, crashes, rebalances, poison records, auth failures and shutdowns.
//
// The broker is the cluster named by KAFKA_BROKERS, or a real Apache Kafka
// 4.x broker the suite fetches from Maven Central and starts on loopback
// (internal/harness/localkafka). The suite is skipped with -short.
package integration
