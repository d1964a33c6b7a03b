# A Rack app for puma (testdata/servers, servers_test.go): answers
# "version=puma pid=P gen=G".
gen = ENV.fetch("RELAUNCH_GENERATION", "?")
run lambda { |env|
  body = "version=puma pid=#{Process.pid} gen=#{gen}\n"
  [200, { "Content-Type" => "text/plain", "Content-Length" => body.bytesize.to_s }, [body]]
}
