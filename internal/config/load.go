package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// maxSecretFile bounds how much of a *_FILE is read: credentials are short,
// and a wrong path (a device, a log) must not hang or exhaust the process.
const maxSecretFile = 64 << 10

// Load builds the configuration: the defaults, then the environment (read
// with getenv; an empty value counts as unset), then the command-line flags
// in args (without the program name), which override the environment. Every
// variable is also a flag named in kebab case (KAFKA_BROKERS is
// --kafka-brokers, given as --kafka-brokers=a:9092 or --kafka-brokers
// a:9092; the boolean --kafka-tls needs no value). Load then runs Validate,
// so the result has its derived fields filled.
//
// A *_FILE variable names a file whose content, without trailing newlines,
// is the value of the variable it belongs to. Setting both X and X_FILE in
// the same source (environment or flags) is an error; a flag for either one
// replaces both environment variables.
//
// -h or --help writes Usage to usage (when not nil) and returns
// flag.ErrHelp. Any other error is a single line starting "config: ", naming
// the variable (e.g. `config: BATCH_WINDOW: invalid duration "5x"`), and
// contains no secret value: not one given as a secret, nor the content of a
// secret file, nor any value that contains one of those. An unreadable file
// is reported with its variable, its path and the reason, never its content.
func Load(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if usage == nil {
		usage = io.Discard
	}
	sts := settings()
	src := sources{env: readEnv(sts, getenv), flags: map[string]string{}}
	fs := newFlagSet(sts, src.flags)
	// h collects every secret value seen, from any source, so that no
	// message can echo one.
	h := secretsIn(sts, src.env)
	err := fs.Parse(args)
	h = append(h, secretsIn(sts, src.flags)...)
	if errors.Is(err, flag.ErrHelp) {
		Usage(usage)
		return Config{}, flag.ErrHelp
	}
	if err != nil {
		return Config{}, flagError(err, h)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %s (flags take the form --name=value)", h.show(fs.Arg(0)))
	}
	if err := refuseSecretFlags(sts, src.flags); err != nil {
		return Config{}, err
	}
	values := src.values(sts)
	keyFile, err := src.readFiles(sts, values, &h)
	if err != nil {
		return Config{}, err
	}
	c := Default()
	c.MoEngageDataAPIKeyFile = keyFile
	if err := c.apply(sts, values, h); err != nil {
		return Config{}, err
	}
	if err := c.validate(h); err != nil {
		return Config{}, err
	}
	return c, nil
}

// sources are the values given for each variable, by its Env name, in the
// environment and as flags.
type sources struct {
	env, flags map[string]string
}

// readEnv returns the variables of sts that getenv has a non-empty value
// for.
func readEnv(sts []setting, getenv func(string) string) map[string]string {
	env := map[string]string{}
	for _, st := range sts {
		if v := getenv(st.Env); v != "" {
			env[st.Env] = v
		}
	}
	return env
}

// newFlagSet returns a flag set with a flag for each of sts, which records
// the value given into flags.
func newFlagSet(sts []setting, flags map[string]string) *flag.FlagSet {
	fs := flag.NewFlagSet("cohortsync-worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // Usage is ours, and errors are returned, not printed
	fs.Usage = func() {}
	for _, st := range sts {
		record := func(v string) error { flags[st.Env] = v; return nil }
		if st.isBool {
			fs.BoolFunc(st.Flag, st.Help, record)
		} else {
			fs.Func(st.Flag, st.Help, record)
		}
	}
	return fs
}

// secretsIn returns the values in m of the secret variables of sts (a
// secret file's content is added when the file is read).
func secretsIn(sts []setting, m map[string]string) hider {
	var h hider
	for _, st := range sts {
		if st.Secret && st.fileOf == "" {
			h = append(h, m[st.Env])
		}
	}
	return h
}

// refuseSecretFlags returns an error for the first secret given as a flag.
// A flag sits in argv, which ps and /proc show to every user of the host and
// which shells keep in their history: the error points to the two forms
// that keep it out of sight.
func refuseSecretFlags(sts []setting, flags map[string]string) error {
	for _, st := range sts {
		if _, ok := flags[st.Env]; ok && st.Secret && st.fileOf == "" {
			return configError(st.Env, "not accepted as the flag --%s: a command line is visible to other processes; "+
				"set the environment variable %s, or put the secret in a file and set %s_FILE", st.Flag, st.Env, st.Env)
		}
	}
	return nil
}

// values returns the value of each variable: a flag, else the environment.
func (src sources) values(sts []setting) map[string]string {
	values := map[string]string{}
	for _, st := range sts {
		if v, ok := src.flags[st.Env]; ok {
			values[st.Env] = v
		} else if v, ok := src.env[st.Env]; ok {
			values[st.Env] = v
		}
	}
	return values
}

// readFiles resolves each pair X and X_FILE, one source at a time: it
// removes X_FILE from values and, when X_FILE is set, reads the file into
// values[X], adding the content of a secret file to h. It returns the path
// of MOENGAGE_DATA_API_KEY_FILE (re-read after a 401/403), or "".
func (src sources) readFiles(sts []setting, values map[string]string, h *hider) (keyFile string, err error) {
	for _, st := range sts {
		if st.fileOf == "" {
			continue
		}
		target, file := st.fileOf, st.Env
		from := src.env
		if _, ok := src.flags[target]; ok {
			from = src.flags
		} else if _, ok := src.flags[file]; ok {
			from = src.flags
		}
		_, hasTarget := from[target]
		path, hasFile := from[file]
		if hasTarget && hasFile {
			return "", fmt.Errorf("config: %s and %s are both set; set one", target, file)
		}
		delete(values, file)
		if !hasFile {
			continue
		}
		v, err := readValueFile(st, path, h)
		if err != nil {
			return "", err
		}
		values[target] = v
		if target == "MOENGAGE_DATA_API_KEY" {
			keyFile = path
		}
	}
	return keyFile, nil
}

// readValueFile reads the file at path that the *_FILE setting st names:
// its content without trailing newlines, which must not be empty. The
// content of a secret file is added to h before anything can echo it.
func readValueFile(st setting, path string, h *hider) (string, error) {
	b, err := readLimited(path, maxSecretFile)
	if err != nil {
		return "", configError(st.Env, "cannot read %s: %s", h.show(path), err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if st.Secret {
		*h = append(*h, v)
	}
	if v == "" {
		return "", configError(st.Env, "%s is empty", h.show(path))
	}
	return v, nil
}

// apply parses each variable in values into c.
func (c *Config) apply(sts []setting, values map[string]string, h hider) error {
	for _, st := range sts {
		v, ok := values[st.Env]
		if !ok || st.set == nil {
			continue
		}
		if !st.set(c, v) {
			// Secret settings always parse, so v is never a secret itself;
			// h still hides a value that contains one.
			return configError(st.Env, "invalid %s %s%s", st.kind, h.show(v), st.hint)
		}
	}
	return nil
}

// flagError turns an error of the flag package ("<what>: <argument>") into
// one line. The argument is quoted like every value Load echoes, whatever
// follows an "=" in it is cut (`---moengage-data-api-key=KEY`, a typo, is
// "bad flag syntax" and would otherwise print the key), and one holding a
// secret is not shown.
func flagError(err error, h hider) error {
	what, arg, ok := strings.Cut(err.Error(), ": ")
	if !ok {
		return fmt.Errorf("config: invalid command line: %s", h.show(err.Error()))
	}
	if before, _, cut := strings.Cut(arg, "="); cut {
		arg = before + "=…"
	}
	return fmt.Errorf("config: %s: %s", what, h.show(arg))
}
