package config

import (
	"errors"
	"fmt"
	"strings"
)

// SecretFileFunc returns a function that reads the secret in the file at
// path again at each call, with the rules Load applies to a *_FILE variable:
// at most 64 KiB, trailing newlines removed, empty is an error. It suits
// sink.Config.APIKeyFunc, so that a rotated Kubernetes Secret (a mounted
// file, swapped atomically by the kubelet) is picked up without a restart.
//
// Its errors name the path and the reason, never the file's content. It is
// safe for concurrent use.
func SecretFileFunc(path string) func() (string, error) {
	return func() (string, error) {
		b, err := readLimited(path, maxSecretFile)
		if err != nil {
			return "", fmt.Errorf("config: read secret file %s: %w", path, err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("config: secret file %s: %w", path, errEmptySecret)
		}
		return v, nil
	}
}

// errEmptySecret is the reason SecretFileFunc gives for an empty file.
var errEmptySecret = errors.New("empty")
