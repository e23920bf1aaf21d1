// Command simswitch is the report's Go switch in miniature: an http.Transport with its own TLSClientConfig
// (client certificate, CA pool) and concurrent GET /ping?interval=N requests started together, each traced
// with httptrace. -force-h2 sets ForceAttemptHTTP2, the fix Go 1.13 added; without it, a Transport given its own
// TLSClientConfig does not configure HTTP/2 (golang/go#25761, #14275).
//
// -loop sends the batch again and again, each request with a target of its own (&n=N), until the controller is
// gone (every ping of a batch refused a connection): a Go switch's client under `python -m controller trials`
// (tests/test_trials.py, docs/your-own-client.md). -quiet logs failures only.
//
// Only the standard library: `go build` needs no network. tests/test_go_client.py builds and runs it.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

var sent int64 // requests sent so far: each one's &n=

func main() {
	url := flag.String("url", "https://127.0.0.1:8443", "the controller's base URL")
	certFile := flag.String("cert", "certs/switch-1.pem", "the switch's certificate")
	keyFile := flag.String("key", "certs/switch-1.key", "its private key")
	caFile := flag.String("ca", "certs/ca.pem", "the CA that issued the controller's certificate")
	forceH2 := flag.Bool("force-h2", false, "set Transport.ForceAttemptHTTP2")
	maxConns := flag.Int("max-conns-per-host", 0, "set Transport.MaxConnsPerHost (0: no limit)")
	intervals := flag.String("intervals", "5,10,15", "one ping per interval (seconds), all started together")
	loop := flag.Bool("loop", false, "send the batch again and again, until the controller is gone")
	quiet := flag.Bool("quiet", false, "log failed pings only")
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)

	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("client certificate: %v", err)
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
		ForceAttemptHTTP2: *forceH2,
		MaxConnsPerHost:   *maxConns,
	}
	client := &http.Client{Transport: transport}
	verbose = !*quiet

	for *loop {
		// a failed ping is logged; the loop goes on, as a switch's would, until nothing listens any more
		if _, gone := batch(client, *url, *intervals); gone {
			log.Printf("the controller is gone (every ping refused a connection): stopping")
			return
		}
	}
	if failed, _ := batch(client, *url, *intervals); failed {
		os.Exit(1)
	}
}

var verbose = true // -quiet: failures only

// batch sends one ping per interval, all at once, and waits for them all; it reports whether any failed, and
// whether every one found nothing listening (connection refused).
func batch(client *http.Client, url, intervals string) (bool, bool) {
	var wg sync.WaitGroup
	failed := false
	refused := 0
	var mu sync.Mutex
	all := strings.Split(intervals, ",")
	for _, interval := range all {
		wg.Add(1)
		go func(interval string) {
			defer wg.Done()
			if err := ping(client, url, interval); err != nil {
				log.Printf("ping %s: %v", interval, err)
				mu.Lock()
				failed = true
				if errors.Is(err, syscall.ECONNREFUSED) {
					refused++
				}
				mu.Unlock()
			}
		}(interval)
	}
	wg.Wait()
	return failed, refused == len(all)
}

func ping(client *http.Client, base, interval string) error {
	trace := &httptrace.ClientTrace{}
	if verbose {
		trace = verboseTrace(interval)
	}
	target := fmt.Sprintf("%s/ping?interval=%s&n=%d", base, interval, atomic.AddInt64(&sent, 1))
	request, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	response, err := client.Do(request.WithContext(httptrace.WithClientTrace(request.Context(), trace)))
	if err != nil {
		return err
	}
	defer response.Body.Close()
	if _, err := io.Copy(io.Discard, response.Body); err != nil {
		return err
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", response.Status)
	}
	if verbose {
		fmt.Printf("ping %s: %s %s\n", interval, response.Proto, response.Status)
	}
	return nil
}

func verboseTrace(interval string) *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		ConnectStart: func(network, addr string) { log.Printf("ping %s: connectStart %s", interval, addr) },
		TLSHandshakeDone: func(state tls.ConnectionState, err error) {
			log.Printf("ping %s: tlsHandshakeDone ALPN %q err %v", interval, state.NegotiatedProtocol, err)
		},
		GotConn: func(info httptrace.GotConnInfo) {
			log.Printf("ping %s: gotConn local %s reused %v", interval, info.Conn.LocalAddr(), info.Reused)
		},
	}
}
