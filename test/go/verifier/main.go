// Command verifier judges certificates with Go's crypto/x509 and crypto/tls, the code that
// kube-apiserver, the kubelet and etcd use to verify their peers. It uses the standard library only.
//
// It reads one JSON request on stdin:
//
//	{"checks": [{"name": "...", "certPem": "...", "roots": ["..."], "intermediates": ["..."],
//	  "keyUsages": ["serverAuth"], "dnsNames": ["..."], "ips": ["..."],
//	  "at": "2030-01-02T15:04:05Z", "keyPem": "..."}]}
//
// For each check it parses every certificate with x509.ParseCertificate and verifies the first
// certificate of certPem with Certificate.Verify, once per listed key usage. It then calls
// Certificate.VerifyHostname for every DNS name and IP address. When keyPem is set, it loads the
// pair with tls.X509KeyPair, which fails unless the key matches the certificate. It prints one
// JSON line per check, {"name": "...", "ok": true, "errors": []}, in request order.
//
// Exit status: 0 when every check passed, 1 when at least one failed, 2 when the request itself is
// invalid (not JSON, an unknown field, no checks, an empty or repeated name).
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

type request struct {
	Checks []check `json:"checks"`
}

type check struct {
	Name string `json:"name"`
	// CertPEM is the certificate to judge, optionally followed by the chain a server would send.
	CertPEM       string   `json:"certPem"`
	Roots         []string `json:"roots"`
	Intermediates []string `json:"intermediates"`
	// KeyUsages lists the extended key usages that must all be allowed, each verified on its own.
	KeyUsages []string `json:"keyUsages"`
	DNSNames  []string `json:"dnsNames"`
	IPs       []string `json:"ips"`
	// At is the verification time in RFC 3339, or empty for the current time.
	At     string `json:"at"`
	KeyPEM string `json:"keyPem"`
}

type result struct {
	Name   string   `json:"name"`
	OK     bool     `json:"ok"`
	Errors []string `json:"errors"`
}

var keyUsageByName = map[string]x509.ExtKeyUsage{
	"serverAuth": x509.ExtKeyUsageServerAuth,
	"clientAuth": x509.ExtKeyUsageClientAuth,
	"any":        x509.ExtKeyUsageAny,
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout, os.Stderr))
}

func run(stdin io.Reader, stdout, stderr io.Writer) int {
	checks, err := readRequest(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "verifier: invalid request on stdin: %v\n", err)
		return 2
	}

	out := bufio.NewWriter(stdout)
	encoder := json.NewEncoder(out)
	encoder.SetEscapeHTML(false)
	allPassed := true
	for _, c := range checks {
		problems := judge(c)
		if len(problems) > 0 {
			allPassed = false
		}
		if err := encoder.Encode(result{Name: c.Name, OK: len(problems) == 0, Errors: problems}); err != nil {
			fmt.Fprintf(stderr, "verifier: writing the result of %q failed: %v\n", c.Name, err)
			return 2
		}
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(stderr, "verifier: writing results failed: %v\n", err)
		return 2
	}
	if allPassed {
		return 0
	}
	return 1
}

func readRequest(stdin io.Reader) ([]check, error) {
	decoder := json.NewDecoder(stdin)
	// A misspelled field would otherwise drop a requirement without any notice.
	decoder.DisallowUnknownFields()
	var req request
	if err := decoder.Decode(&req); err != nil {
		return nil, err
	}
	if decoder.More() {
		return nil, errors.New("more than one JSON value")
	}
	if len(req.Checks) == 0 {
		return nil, errors.New(`"checks" is missing or empty`)
	}
	seen := make(map[string]bool, len(req.Checks))
	for i, c := range req.Checks {
		if c.Name == "" {
			return nil, fmt.Errorf("checks[%d]: name is empty", i)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("checks[%d]: name %q is used twice", i, c.Name)
		}
		seen[c.Name] = true
	}
	return req.Checks, nil
}

// judge returns every problem that Go finds with one check. An empty list means that it passed.
func judge(c check) []string {
	problems := []string{}
	fail := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}

	chain, err := parseCertificates(c.CertPEM)
	if err != nil {
		fail("certPem: %v", err)
	}

	// Roots is never nil, so Verify cannot fall back to the system roots.
	roots := x509.NewCertPool()
	for i, text := range c.Roots {
		certificates, err := parseCertificates(text)
		if err != nil {
			fail("roots[%d]: %v", i, err)
		}
		for _, certificate := range certificates {
			roots.AddCert(certificate)
		}
	}
	if len(c.Roots) == 0 {
		fail("roots: no CA certificate given, and the verifier never uses the system roots")
	}

	intermediates := x509.NewCertPool()
	for i, text := range c.Intermediates {
		certificates, err := parseCertificates(text)
		if err != nil {
			fail("intermediates[%d]: %v", i, err)
		}
		for _, certificate := range certificates {
			intermediates.AddCert(certificate)
		}
	}

	usages := make([]x509.ExtKeyUsage, 0, len(c.KeyUsages))
	for _, name := range c.KeyUsages {
		usage, known := keyUsageByName[name]
		if !known {
			fail("keyUsages: unknown key usage %q, expected serverAuth, clientAuth or any", name)
			continue
		}
		usages = append(usages, usage)
	}
	// An empty list would make Verify require serverAuth silently.
	if len(c.KeyUsages) == 0 {
		fail("keyUsages: empty, list serverAuth, clientAuth or any")
	}

	at := time.Now()
	if c.At != "" {
		parsed, err := time.Parse(time.RFC3339, c.At)
		if err != nil {
			fail("at: %v", err)
		} else {
			at = parsed
		}
	}

	for _, ip := range c.IPs {
		if net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(ip, "["), "]")) == nil {
			fail("ips: %q is not an IP address", ip)
		}
	}
	for _, name := range c.DNSNames {
		if net.ParseIP(name) != nil {
			fail("dnsNames: %q is an IP address, list it under ips", name)
		}
	}

	if len(problems) > 0 || len(chain) == 0 {
		return problems
	}

	leaf := chain[0]
	for _, certificate := range chain[1:] {
		intermediates.AddCert(certificate)
	}
	for i, usage := range usages {
		options := x509.VerifyOptions{
			Roots:         roots,
			Intermediates: intermediates,
			KeyUsages:     []x509.ExtKeyUsage{usage},
			CurrentTime:   at,
		}
		if _, err := leaf.Verify(options); err != nil {
			fail("verify for %s: %v", c.KeyUsages[i], err)
		}
	}
	for _, name := range c.DNSNames {
		if err := leaf.VerifyHostname(name); err != nil {
			fail("hostname %s: %v", name, err)
		}
	}
	for _, ip := range c.IPs {
		if err := leaf.VerifyHostname(ip); err != nil {
			fail("IP %s: %v", ip, err)
		}
	}
	if c.KeyPEM != "" {
		if _, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM)); err != nil {
			fail("key pair: %v", err)
		}
	}
	return problems
}

// parseCertificates parses every PEM block of text with x509.ParseCertificate. Unlike
// CertPool.AppendCertsFromPEM, it reports a block that does not parse instead of skipping it.
func parseCertificates(text string) ([]*x509.Certificate, error) {
	var certificates []*x509.Certificate
	rest := []byte(text)
	for index := 0; ; index++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return certificates, fmt.Errorf("PEM block %d is %q, expected CERTIFICATE", index, block.Type)
		}
		certificate, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return certificates, fmt.Errorf("PEM block %d: %w", index, err)
		}
		// Go 1.23 and later reject a negative serial number in ParseCertificate. Debian bookworm's
		// Go 1.19 accepts it, and so does a newer Go building a module that declares go 1.19.
		if certificate.SerialNumber.Sign() < 0 {
			return certificates, fmt.Errorf("PEM block %d: x509: negative serial number (rejected by Go 1.23 and later)", index)
		}
		certificates = append(certificates, certificate)
	}
	if len(certificates) == 0 {
		return nil, errors.New("no PEM block found")
	}
	if trailing := bytes.TrimSpace(rest); len(trailing) > 0 {
		return certificates, fmt.Errorf("%d bytes after the last PEM block are not PEM", len(trailing))
	}
	return certificates, nil
}
