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

	env := map[string]string{}
	for _, st := range sts {
		if v := getenv(st.Env); v != "" {
			env[st.Env] = v
		}
	}
	flags := map[string]string{}
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

	// h collects every secret value seen, from any source, so that no
	// message can echo one.
	var h hider
	addSecrets := func(m map[string]string) {
		for _, st := range sts {
			if st.Secret && st.fileOf == "" {
				h = append(h, m[st.Env])
			}
		}
	}
	addSecrets(env)
	err := fs.Parse(args)
	addSecrets(flags)
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
	// A secret given as a flag sits in argv, which ps and /proc show to
	// every user of the host and which shells keep in their history: refuse
	// it, pointing to the two forms that keep it out of sight.
	for _, st := range sts {
		if _, ok := flags[st.Env]; ok && st.Secret && st.fileOf == "" {
			return Config{}, configError(st.Env, "not accepted as the flag --%s: a command line is visible to other processes; "+
				"set the environment variable %s, or put the secret in a file and set %s_FILE", st.Flag, st.Env, st.Env)
		}
	}

	// The value of each variable: a flag, else the environment.
	values := map[string]string{}
	for _, st := range sts {
		if v, ok := flags[st.Env]; ok {
			values[st.Env] = v
		} else if v, ok := env[st.Env]; ok {
			values[st.Env] = v
		}
	}
	// X and X_FILE are resolved as a pair, one source at a time.
	keyFile := "" // MOENGAGE_DATA_API_KEY_FILE, re-read after a 401/403
	for _, st := range sts {
		if st.fileOf == "" {
			continue
		}
		target, file := st.fileOf, st.Env
		src := env
		if _, ok := flags[target]; ok {
			src = flags
		} else if _, ok := flags[file]; ok {
			src = flags
		}
		_, hasTarget := src[target]
		path, hasFile := src[file]
		if hasTarget && hasFile {
			return Config{}, fmt.Errorf("config: %s and %s are both set; set one", target, file)
		}
		delete(values, file)
		if !hasFile {
			continue
		}
		b, err := readLimited(path, maxSecretFile)
		if err != nil {
			return Config{}, configError(file, "cannot read %s: %s", h.show(path), err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if st.Secret {
			h = append(h, v)
		}
		if v == "" {
			return Config{}, configError(file, "%s is empty", h.show(path))
		}
		values[target] = v
		if target == "MOENGAGE_DATA_API_KEY" {
			keyFile = path
		}
	}

	c := Default()
	c.MoEngageDataAPIKeyFile = keyFile
	for _, st := range sts {
		v, ok := values[st.Env]
		if !ok || st.set == nil {
			continue
		}
		if !st.set(&c, v) {
			// Secret settings always parse, so v is never a secret itself;
			// h still hides a value that contains one.
			return Config{}, configError(st.Env, "invalid %s %s%s", st.kind, h.show(v), st.hint)
		}
	}
	if err := c.validate(h); err != nil {
		return Config{}, err
	}
	return c, nil
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
