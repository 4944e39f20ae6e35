package localkafka

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// pomXML is a byte-identical copy of scripts/kafka/pom.xml (a test checks),
// embedded so that Fetch works from any working directory and binary.
//
//go:embed pom.xml
var pomXML []byte

// markerName is the file, next to libs/, whose content records a complete
// download of exactly this pom and version.
const markerName = "complete"

// Fetch resolves the jars of Apache Kafka opts.Version (kafka_2.13 with its
// runtime dependencies and a log4j2 slf4j binding) into
// CacheDir/kafka-<version>/libs with `mvn dependency:copy-dependencies` and
// returns that directory.
//
// A marker file records a complete download, so later calls return at once.
// Concurrent calls, in one process or several, are serialised by a lock file
// and the jars appear by an atomic rename, so a reader never sees a partial
// libs directory. Maven must be in PATH when the cache is cold; its local
// repository (~/.m2 unless MAVEN_OPTS says otherwise) is used as usual.
func Fetch(ctx context.Context, opts Options) (libsDir string, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return "", err
	}
	return fetch(ctx, o)
}

func fetch(ctx context.Context, o Options) (string, error) {
	verDir := filepath.Join(o.CacheDir, "kafka-"+o.Version)
	libs := filepath.Join(verDir, "libs")
	if fetched(verDir, o.Version) {
		return libs, nil
	}
	if err := os.MkdirAll(verDir, 0o755); err != nil {
		return "", fmt.Errorf("localkafka: fetch: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(o.CacheDir, "kafka-"+o.Version+".lock"), func() {
		o.Logger.Info("localkafka: waiting for another process fetching Kafka jars", "version", o.Version)
	})
	if err != nil {
		return "", fmt.Errorf("localkafka: fetch: lock: %w", err)
	}
	defer unlock()
	if fetched(verDir, o.Version) { // another process finished while we waited
		return libs, nil
	}

	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return "", fmt.Errorf("localkafka: fetch: Kafka %s is not cached in %s and Maven (mvn) is not in PATH: %w", o.Version, verDir, err)
	}
	start := time.Now()
	o.Logger.Info("localkafka: fetching Kafka jars with Maven", "version", o.Version, "dir", libs)

	work, err := os.MkdirTemp(verDir, "fetch-")
	if err != nil {
		return "", fmt.Errorf("localkafka: fetch: %w", err)
	}
	defer os.RemoveAll(work)
	pom := filepath.Join(work, "pom.xml")
	if err := os.WriteFile(pom, pomXML, 0o644); err != nil {
		return "", fmt.Errorf("localkafka: fetch: %w", err)
	}
	// Pass 1, without the binding: which slf4j-api and log4j-core does this
	// Kafka bring? Pass 2 resolves again with the binding matching them
	// (fast: the jars are in the local Maven repository by then).
	probe := filepath.Join(work, "probe")
	if err := copyDependencies(ctx, mvn, pom, probe, o.Version, []string{"-Dnobinding"}); err != nil {
		return "", err
	}
	kafkaJars, err := scanJars(probe)
	if err != nil {
		return "", err
	}
	if !kafkaJars.kafka {
		return "", fmt.Errorf("localkafka: fetch: kafka_2.13-%s.jar missing from %s", o.Version, probe)
	}
	out := filepath.Join(work, "libs")
	if err := copyDependencies(ctx, mvn, pom, out, o.Version, kafkaJars.bindingArgs()); err != nil {
		return "", err
	}
	jars, err := scanJars(out)
	if err != nil {
		return "", err
	}
	if err := jars.checkBinding(); err != nil {
		return "", fmt.Errorf("localkafka: fetch: Kafka %s: %w", o.Version, err)
	}

	// Publish: drop any stale libs (e.g. from an older pom), rename the new
	// ones in, then write the marker (atomically) last.
	_ = os.Remove(filepath.Join(verDir, markerName))
	if err := os.RemoveAll(libs); err != nil {
		return "", fmt.Errorf("localkafka: fetch: %w", err)
	}
	if err := os.Rename(out, libs); err != nil {
		return "", fmt.Errorf("localkafka: fetch: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(verDir, markerName), []byte(markerContent(o.Version)+jars.describe()+"\n")); err != nil {
		return "", fmt.Errorf("localkafka: fetch: %w", err)
	}
	o.Logger.Info("localkafka: fetched Kafka jars", "version", o.Version, "binding", jars.binding(), "took", time.Since(start).Round(time.Millisecond))
	return libs, nil
}

// markerContent is the first line of the marker file: it names the version
// and the pom, so a changed pom triggers a new download.
func markerContent(version string) string {
	sum := sha256.Sum256(pomXML)
	return "kafka_2.13 " + version + " pom-sha256 " + hex.EncodeToString(sum[:8]) + "\n"
}

// fetched reports whether verDir holds a complete download for this pom.
func fetched(verDir, version string) bool {
	b, err := os.ReadFile(filepath.Join(verDir, markerName))
	if err != nil || !bytes.HasPrefix(b, []byte(markerContent(version))) {
		return false
	}
	_, err = os.Stat(filepath.Join(verDir, "libs", "kafka_2.13-"+version+".jar"))
	return err == nil
}

// copyDependencies runs `mvn dependency:copy-dependencies` for the pom.
func copyDependencies(ctx context.Context, mvn, pom, outDir, version string, extra []string) error {
	args := []string{
		"-q", "-B", "-Dstyle.color=never",
		"-f", pom,
		"-Dkafka.version=" + version,
		"-DoutputDirectory=" + outDir,
	}
	args = append(args, extra...)
	args = append(args, "dependency:copy-dependencies")
	cmd := exec.CommandContext(ctx, mvn, args...)
	cmd.Dir = filepath.Dir(pom)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("localkafka: fetch: %w", ctx.Err())
		}
		return fmt.Errorf("localkafka: fetch: mvn %s: %w\n%s", strings.Join(args, " "), err, tail(buf.Bytes(), 40))
	}
	return nil
}

// jarSet is what scanJars learnt about a libs directory.
type jarSet struct {
	kafka          bool   // kafka_2.13-<version>.jar present
	log4jCore      string // version of log4j-core, "" if absent
	slf4jAPI       string // version of slf4j-api, "" if absent
	bindingName    string // log4j-slf4j-impl or log4j-slf4j2-impl, "" if absent
	bindingVersion string
}

var jarRE = regexp.MustCompile(`^(kafka_2\.13|log4j-core|slf4j-api|log4j-slf4j-impl|log4j-slf4j2-impl)-([0-9][^/]*)\.jar$`)

func scanJars(dir string) (jarSet, error) {
	var s jarSet
	entries, err := os.ReadDir(dir)
	if err != nil {
		return s, fmt.Errorf("localkafka: fetch: %w", err)
	}
	for _, e := range entries {
		s.add(e.Name())
	}
	return s, nil
}

func (s *jarSet) add(name string) {
	m := jarRE.FindStringSubmatch(name)
	if m == nil {
		return
	}
	switch m[1] {
	case "kafka_2.13":
		s.kafka = true
	case "log4j-core":
		s.log4jCore = m[2]
	case "slf4j-api":
		s.slf4jAPI = m[2]
	default:
		s.bindingName, s.bindingVersion = m[1], m[2]
	}
}

// wantBinding is the log4j binding artifact matching the slf4j-api present.
func (s jarSet) wantBinding() string {
	if strings.HasPrefix(s.slf4jAPI, "1.") {
		return "log4j-slf4j-impl"
	}
	return "log4j-slf4j2-impl"
}

// bindingArgs returns the Maven arguments selecting the binding that matches
// the slf4j-api and log4j-core of s (a resolution without the binding). When
// Kafka brings no log4j-core (4.0.0's pom does not), the pom's default
// version stays, and the binding brings log4j-core and log4j-api with it.
func (s jarSet) bindingArgs() []string {
	var args []string
	if s.log4jCore != "" {
		args = append(args, "-Dlog4j.version="+s.log4jCore)
	}
	if s.slf4jAPI != "" && s.wantBinding() != "log4j-slf4j-impl" {
		args = append(args, "-Dlog4j.binding="+s.wantBinding())
	}
	return args
}

// checkBinding reports an error unless s has slf4j-api, log4j-core and the
// binding matching both.
func (s jarSet) checkBinding() error {
	switch {
	case s.slf4jAPI == "":
		return errors.New("no slf4j-api jar")
	case s.log4jCore == "":
		return errors.New("no log4j-core jar")
	case s.bindingName != s.wantBinding() || s.bindingVersion != s.log4jCore:
		return fmt.Errorf("logging binding %s does not match slf4j-api %s and log4j-core %s", s.binding(), s.slf4jAPI, s.log4jCore)
	}
	return nil
}

func (s jarSet) binding() string {
	if s.bindingName == "" {
		return "none"
	}
	return s.bindingName + "-" + s.bindingVersion
}

func (s jarSet) describe() string {
	return fmt.Sprintf("binding %s slf4j-api %s log4j-core %s", s.binding(), s.slf4jAPI, s.log4jCore)
}

// writeFileAtomic writes data to a temporary file next to name, then renames it.
func writeFileAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".tmp-")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), name); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	i := len(b)
	for k := 0; k < n && i > 0; k++ {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			i = 0
			break
		}
		i = j
	}
	if i > 0 {
		i++ // skip the newline
	}
	return string(b[i:])
}
