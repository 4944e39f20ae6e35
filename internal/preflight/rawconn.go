package preflight

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
	"github.com/segmentio/kafka-go/sasl"
)

// rawMetadata asks addr for the metadata of topics, with the operations
// this principal may perform on each, and with automatic topic creation
// off: asking about a missing topic must not create it.
func rawMetadata(ctx context.Context, addr string, tlsCfg *tls.Config, mech sasl.Mechanism, to time.Duration, topics []string) (*metadataAPI.Response, error) {
	pc, err := dialRaw(ctx, addr, tlsCfg, mech, to)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	m, err := pc.RoundTrip(&metadataAPI.Request{TopicNames: topics, AllowAutoTopicCreation: false, IncludeTopicAuthorizedOperations: true})
	if err != nil {
		return nil, err
	}
	md, ok := m.(*metadataAPI.Response)
	if !ok {
		return nil, fmt.Errorf("unexpected metadata answer %T", m)
	}
	return md, nil
}

// dialRaw opens a connection to one broker as kafka-go's transport does
// (TCP, TLS with the configured settings and the broker's name, API version
// negotiation, SASL with the configured mechanism), bounded by to. The
// caller closes it.
func dialRaw(ctx context.Context, addr string, tlsCfg *tls.Config, mech sasl.Mechanism, to time.Duration) (*protocol.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	if tlsCfg != nil {
		c := tlsCfg.Clone()
		if c.ServerName == "" {
			c.ServerName = host
		}
		tc := tls.Client(nc, c)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		nc = tc
	}
	deadline, _ := ctx.Deadline()
	pc := protocol.NewConn(nc, clientID)
	_ = pc.SetDeadline(deadline)
	ok := false
	defer func() {
		if !ok {
			pc.Close()
		}
	}()
	m, err := pc.RoundTrip(new(apiversions.Request))
	if err != nil {
		return nil, err
	}
	av := m.(*apiversions.Response)
	if av.ErrorCode != 0 {
		return nil, kafka.Error(av.ErrorCode)
	}
	versions := make(map[protocol.ApiKey]int16, len(av.ApiKeys))
	for _, k := range av.ApiKeys {
		key := protocol.ApiKey(k.ApiKey)
		versions[key] = key.SelectVersion(k.MinVersion, k.MaxVersion)
	}
	pc.SetVersions(versions)
	if mech != nil {
		p, _ := strconv.Atoi(port)
		if err := authenticate(sasl.WithMetadata(ctx, &sasl.Metadata{Host: host, Port: p}), pc, mech); err != nil {
			return nil, fmt.Errorf("SASL %s: %w", mech.Name(), err)
		}
	}
	ok = true
	return pc, nil
}

// authenticate runs the SASL handshake and exchange on pc.
func authenticate(ctx context.Context, pc *protocol.Conn, mech sasl.Mechanism) error {
	m, err := pc.RoundTrip(&saslhandshake.Request{Mechanism: mech.Name()})
	if err != nil {
		return err
	}
	if code := m.(*saslhandshake.Response).ErrorCode; code != 0 {
		return kafka.Error(code)
	}
	sess, state, err := mech.Start(ctx)
	if err != nil {
		return err
	}
	for done := false; !done; {
		m, err := pc.RoundTrip(&saslauthenticate.Request{AuthBytes: state})
		if err != nil {
			return err
		}
		res := m.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			if res.ErrorMessage != "" {
				return fmt.Errorf("%s: %s", kafka.Error(res.ErrorCode).Title(), res.ErrorMessage)
			}
			return kafka.Error(res.ErrorCode)
		}
		if done, state, err = sess.Next(ctx, res.AuthBytes); err != nil {
			return err
		}
	}
	return nil
}
