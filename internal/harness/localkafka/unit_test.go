package localkafka

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEmbeddedPomMatchesScript(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "..", "scripts", "kafka", "pom.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pomXML, want) {
		t.Fatal("internal/harness/localkafka/pom.xml differs from scripts/kafka/pom.xml: copy the script's pom over the embedded one")
	}
}

func TestOptionsDefaults(t *testing.T) {
	t.Setenv(EnvVersion, "")
	t.Setenv(EnvCacheDir, "/tmp/lk-cache-test")
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.Version != DefaultVersion || o.CacheDir != "/tmp/lk-cache-test" || o.Partitions != 4 || o.Logger == nil {
		t.Fatalf("defaults: %+v", o)
	}
	t.Setenv(EnvVersion, "4.1.0")
	if o, _ := (Options{}).withDefaults(); o.Version != "4.1.0" {
		t.Fatalf("KAFKA_VERSION ignored: %q", o.Version)
	}
	for _, bad := range []Options{
		{Version: "3.9.0"},
		{Version: "4.0.0; rm -rf /"},
		{Listeners: []Listener{{Name: "PLAINTEXT"}}},
		{Listeners: []Listener{{Name: "SASL_SSL"}, {Name: "SASL_SSL"}}},
		{Listeners: []Listener{{Name: "EXTERNAL"}}}, // protocol defaults to the name: unknown
		{Port: 70000},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestServerConfig(t *testing.T) {
	o, err := Options{
		Partitions: 3,
		Listeners:  []Listener{{Name: "SASL_SSL"}, {Name: "EXTERNAL", Protocol: "SASL_PLAINTEXT"}},
		ExtraConfig: map[string]string{
			"num.partitions":            "7",
			"sasl.enabled.mechanisms":   "PLAIN",
			"auto.create.topics.enable": "false",
		},
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	st := &state{Port: 1001, ControllerPort: 1002, Listeners: map[string]int{"SASL_SSL": 1003, "EXTERNAL": 1004}}
	cfg := serverConfig(o, st, "/d")
	get := func(k string) string {
		for _, e := range cfg {
			if e.k == k {
				return e.v
			}
		}
		t.Fatalf("no %s", k)
		return ""
	}
	wantListeners := "PLAINTEXT://127.0.0.1:1001,CONTROLLER://127.0.0.1:1002,SASL_SSL://127.0.0.1:1003,EXTERNAL://127.0.0.1:1004"
	for k, want := range map[string]string{
		"listeners":                           wantListeners,
		"advertised.listeners":                wantListeners,
		"controller.quorum.bootstrap.servers": "127.0.0.1:1002",
		"listener.security.protocol.map":      "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,EXTERNAL:SASL_PLAINTEXT",
		"log.dirs":                            "/d/data",
		"num.partitions":                      "7", // ExtraConfig wins
		"group.initial.rebalance.delay.ms":    "0",
		"offsets.topic.replication.factor":    "1",
		"sasl.enabled.mechanisms":             "PLAIN",
	} {
		if got := get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	// Extra keys come after the generated ones, sorted.
	n := len(cfg)
	if cfg[n-2].k != "auto.create.topics.enable" || cfg[n-1].k != "sasl.enabled.mechanisms" {
		t.Errorf("extra keys not appended sorted: %v", cfg[n-2:])
	}
	// ExtraConfig may override listeners entirely.
	o.ExtraConfig = map[string]string{"listeners": "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2"}
	if got := serverConfig(o, st, "/d"); !slices.Contains(got, kv{"listeners", "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2"}) {
		t.Errorf("listeners override lost: %v", got)
	}
}

func TestRenderProperties(t *testing.T) {
	got := string(renderProperties([]kv{
		{"a.b", "x=y:z"},
		{"listener.name.sasl_ssl.plain.sasl.jaas.config", `org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p\q";`},
		{"k", " lead\nnext"},
	}))
	for _, want := range []string{
		"\na.b=x=y:z\n",
		`password="p\\q";` + "\n",
		"\nk=\\ lead\\nnext\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

func TestClusterID(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		id, err := newClusterID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 22 || !validClusterID(id) || seen[id] {
			t.Fatalf("bad id %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "short", "-Kjx3oKWRYy2NyKnhW_78A", "3Kjx3oKWRYy2NyKnhW_78A=="} {
		if validClusterID(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if !validClusterID("3Kjx3oKWRYy2NyKnhW_78A") { // printed by kafka-storage random-uuid
		t.Error("real id rejected")
	}
}

func TestBindingArgs(t *testing.T) {
	set := func(names ...string) jarSet {
		var s jarSet
		for _, n := range names {
			s.add(n)
		}
		return s
	}
	cases := []struct {
		s    jarSet
		want []string
	}{
		{set("kafka_2.13-4.4.0.jar", "slf4j-api-1.7.36.jar", "log4j-core-2.25.5.jar"), []string{"-Dlog4j.version=2.25.5"}},
		{set("kafka_2.13-4.0.0.jar", "slf4j-api-1.7.36.jar"), nil}, // 4.0.0's pom brings no log4j-core
		{set("slf4j-api-2.0.17.jar", "log4j-core-2.26.0.jar"), []string{"-Dlog4j.version=2.26.0", "-Dlog4j.binding=log4j-slf4j2-impl"}},
	}
	for i, c := range cases {
		if got := c.s.bindingArgs(); !slices.Equal(got, c.want) {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
	if s := set("kafka_2.13-4.4.0.jar", "log4j-core-test-2.25.5.jar"); !s.kafka || s.log4jCore != "" {
		t.Errorf("scan: %+v", s)
	}

	good := set("slf4j-api-1.7.36.jar", "log4j-core-2.25.5.jar", "log4j-slf4j-impl-2.25.5.jar")
	if err := good.checkBinding(); err != nil {
		t.Error(err)
	}
	for i, bad := range []jarSet{
		set("slf4j-api-1.7.36.jar", "log4j-core-2.25.5.jar"),
		set("slf4j-api-1.7.36.jar", "log4j-core-2.24.3.jar", "log4j-slf4j-impl-2.25.5.jar"),
		set("slf4j-api-2.0.17.jar", "log4j-core-2.25.5.jar", "log4j-slf4j-impl-2.25.5.jar"),
		set("log4j-core-2.25.5.jar", "log4j-slf4j-impl-2.25.5.jar"),
	} {
		if bad.checkBinding() == nil {
			t.Errorf("bad set %d accepted", i)
		}
	}
}

func TestTail(t *testing.T) {
	for in, want := range map[string]string{
		"":             "",
		"a":            "a",
		"a\nb\nc\n":    "b\nc",
		"a\nb\nc":      "b\nc",
		"\n\nb\nc\n\n": "b\nc",
	} {
		if got := tail([]byte(in), 2); got != want {
			t.Errorf("tail(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFromEnvOrStartUsesEnv(t *testing.T) {
	t.Setenv(EnvBrokers, "kafka-1:9092,kafka-2:9092")
	addr, stop, err := FromEnvOrStart(context.Background(), Options{Version: "not-a-version"})
	if err != nil || addr != "kafka-1:9092,kafka-2:9092" {
		t.Fatalf("got %q, %v", addr, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestFetchRejectsBadVersion(t *testing.T) {
	if _, err := Fetch(context.Background(), Options{Version: "3.9.1", CacheDir: t.TempDir()}); err == nil {
		t.Fatal("Kafka 3.x accepted")
	}
}
