package emulator_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// Example runs the emulator in process behind an httptest.Server, sends the
// documented add_members example and reads the resulting segment.
func Example() {
	cfg := emulator.DefaultConfig()
	cfg.Credentials = map[string]string{"MYWORKSPACE": "my-data-api-key"}
	emu, err := emulator.New(cfg)
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()

	body := `{"action":"add_members","partner":"6HNBXFm7ZS","parameters":{"cohort_name":"Partner_Name",` +
		`"cohort_id":"JKTAuqTRhC","members":[{"uid":"mm1UR87z4T"},{"uid":"AtCxliflui"}]}}`
	req, _ := http.NewRequest(http.MethodPost, srv.URL+emulator.APIPath, strings.NewReader(body))
	req.SetBasicAuth("MYWORKSPACE", "my-data-api-key")
	req.Header.Set("MOE-APPKEY", "MYWORKSPACE")
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		panic(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(b))
	fmt.Println(resp.Header.Get("X-Ratelimit-Remaining"))
	fmt.Println(emu.Members("MYWORKSPACE", "6HNBXFm7ZS", "JKTAuqTRhC"))
	// Output:
	// 200 {"status":"success","message":"Your request has been accepted and will be processed soon."}
	// 299
	// [AtCxliflui mm1UR87z4T]
}
