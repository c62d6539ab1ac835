# mix format: the Elixir sources (mix.exs, lib/, test/elixir/, examples/).
[
  inputs: [
    "{mix,.formatter}.exs",
    "lib/**/*.{ex,exs}",
    "test/elixir/**/*.{ex,exs}",
    "examples/*.exs"
  ],
  line_length: 100
]
