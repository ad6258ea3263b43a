// Command meshbed-cp-go is an xDS control plane for meshbed's Envoys:
// state-of-the-world and delta ADS on one gRPC port, fed from Consul
// (service health and the policy tree in KV), with an optional debug API.
//
//	meshbed-cp-go -xds 127.0.0.1:18000 -consul http://127.0.0.1:8500 [-http 127.0.0.1:18001]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"meshbed.local/controlplanes/go/internal/consul"
	"meshbed.local/controlplanes/go/internal/resources"
	"meshbed.local/controlplanes/go/internal/server"
)

// version is the source hash, stamped by meshbed's build (-ldflags -X main.version=...).
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("meshbed-cp-go", flag.ContinueOnError)
	xdsAddr := fs.String("xds", "", "gRPC ADS listen address, HOST:PORT (required)")
	consulURL := fs.String("consul", "", "Consul HTTP API base URL, e.g. http://127.0.0.1:8500 (required)")
	httpAddr := fs.String("http", "", "debug HTTP listen address, HOST:PORT (optional)")
	wait := fs.Duration("consul-wait", 30*time.Second, "blocking-query wait")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	pushlogSize := fs.Int("pushlog-size", 50000, "events kept for /debug/pushes")
	showVersion := fs.Bool("version", false, "print the version (source hash) and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println("meshbed-cp-go", version)
		return 0
	}
	usage := func(msg string) int {
		fmt.Fprintf(os.Stderr, "meshbed-cp-go: %s\n", msg)
		fs.Usage()
		return 2
	}
	if *xdsAddr == "" || *consulURL == "" {
		return usage("-xds and -consul are required")
	}
	for flagName, v := range map[string]string{"xds": *xdsAddr, "http": *httpAddr} {
		if v == "" {
			continue
		}
		if err := checkHostPort(v); err != nil {
			return usage(fmt.Sprintf("-%s: %v", flagName, err))
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return usage(fmt.Sprintf("-log-level: %v", err))
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	xdsLis, err := net.Listen("tcp", *xdsAddr)
	if err != nil {
		logger.Error("cannot bind the xDS address", "addr", *xdsAddr, "error", err)
		return 1
	}
	var httpLis net.Listener
	if *httpAddr != "" {
		if httpLis, err = net.Listen("tcp", *httpAddr); err != nil {
			xdsLis.Close()
			logger.Error("cannot bind the debug HTTP address", "addr", *httpAddr, "error", err)
			return 1
		}
	}

	var cp *server.ControlPlane
	watcher, err := consul.New(*consulURL, consul.Options{
		Wait:     *wait,
		OnChange: func() { cp.Notify() },
		Validate: resources.ValidatePolicy,
		Logger:   logger,
	})
	if err != nil {
		logger.Error("bad -consul", "error", err)
		return 2
	}
	cp = server.New(watcher, logger, *pushlogSize)

	started := time.Now()
	logger.Info("meshbed-cp-go serving", "version", version, "xds", xdsLis.Addr().String(), "http", *httpAddr, "consul", *consulURL)
	bg, stopBG := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { watcher.Run(bg); done <- struct{}{} }()
	go func() { cp.PushLoop(bg); done <- struct{}{} }()
	serveErr := cp.Serve(ctx, xdsLis, httpLis)
	stopBG()
	<-done
	<-done
	if serveErr != nil {
		logger.Error("stopped", "error", serveErr)
		return 1
	}
	logger.Info("stopped", "after", time.Since(started).Round(time.Millisecond).String())
	return 0
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("expected HOST:PORT, got %q", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port in %q", s)
	}
	return nil
}
