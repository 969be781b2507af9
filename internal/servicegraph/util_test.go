package servicegraph

import (
	"io"
	"net/http"
	"strings"
)

func bufioCopy(dst *strings.Builder, resp *http.Response) (int64, error) {
	return io.Copy(dst, resp.Body)
}
