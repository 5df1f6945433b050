package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and revision are stamped at build time, as the Dockerfile does:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.revision=$(git rev-parse HEAD)" ./cmd/trackerd
//
// Left empty, they come from the build information: the module version of
// `go install github.com/trackerd/trackerd/cmd/trackerd@v1.2.3`, and the
// VCS revision of a build in a git checkout.
var (
	version  = ""
	revision = ""
)

// versionString is what `trackerd version` prints:
//
//	trackerd v1.2.3 (revision 0123456789ab, go1.26.8, linux/amd64)
func versionString() string {
	return formatVersion(version, revision, readBuildInfo())
}

func readBuildInfo() *debug.BuildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return bi
}

// buildInfo is what trackerd_build_info and the status show: the version
// ("devel" when unknown), the revision ("" when unknown, with "+dirty"
// for a build of a modified checkout) and the Go version.
type buildInfo struct {
	Version, Revision, GoVersion string
}

// currentBuild is this binary's buildInfo.
func currentBuild() buildInfo { return resolveBuild(version, revision, readBuildInfo()) }

// resolveBuild fills in what the stamped version and revision leave empty
// from bi (which may be nil).
func resolveBuild(v, rev string, bi *debug.BuildInfo) buildInfo {
	dirty := false
	if bi != nil {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		if rev == "" {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && dirty {
		rev += "+dirty"
	}
	return buildInfo{Version: v, Revision: rev, GoVersion: runtime.Version()}
}

// formatVersion fills in what the stamped version and revision leave
// empty from bi (which may be nil).
func formatVersion(v, rev string, bi *debug.BuildInfo) string {
	b := resolveBuild(v, rev, bi)
	out := "trackerd " + b.Version + " ("
	if b.Revision != "" {
		out += "revision " + b.Revision + ", "
	}
	return out + fmt.Sprintf("%s, %s/%s)", b.GoVersion, runtime.GOOS, runtime.GOARCH)
}
