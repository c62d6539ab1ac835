defmodule PythonDocsTest do
  # Every Elixir block of docs/elixir.md runs as written: they are written
  # as matches (`{:ok, 4.0} = ...`), so a block whose results differ fails.
  use ExUnit.Case, async: false
  import ExUnit.CaptureIO
  import PythonTest.Helpers

  @guide Path.expand("../../docs/elixir.md", __DIR__)
  @external_resource @guide

  # Blocks that are project configuration, not code to run here.
  @not_run ["defp deps do", "config :erlang_python"]

  blocks =
    Regex.scan(~r/^```elixir\n(.*?)^```$/ms, File.read!(@guide), capture: :all_but_first)
    |> Enum.map(&hd/1)
    |> Enum.with_index(1)

  test "docs/elixir.md has Elixir blocks to run" do
    assert length(unquote(Macro.escape(blocks))) >= 8
  end

  for {code, n} <- blocks, not Enum.any?(@not_run, &String.contains?(code, &1)) do
    @code code
    test "docs/elixir.md block #{n}" do
      pool_idle!()
      # `text` is the one name a block uses without defining it
      capture_io(fn -> Code.eval_string(@code, text: ~s({"a": 1})) end)
      Python.unbind()
      pool_idle!()
    end
  end

  # The iex> lines of the README's Elixir block: each result as shown (a
  # trailing ", ..." in a struct stands for the fields left out).
  readme = File.read!(Path.expand("../../README.md", __DIR__))
  @external_resource Path.expand("../../README.md", __DIR__)
  [iex_block | _] = Regex.run(~r/^```elixir\n(iex> .*?)^```$/ms, readme, capture: :all_but_first)
  @iex_pairs Regex.scan(~r/^iex> (.*)\n(.*)$/m, iex_block, capture: :all_but_first)

  test "README.md's iex> examples" do
    assert length(@iex_pairs) >= 4
    pool_idle!()

    for [expr, shown] <- @iex_pairs do
      {value, _} = Code.eval_string(expr)
      pattern = String.replace(shown, ", ...}", "}")
      {matched, _} = Code.eval_string("match?(#{pattern}, value)", value: value)
      assert matched, "README: #{expr} gave #{inspect(value)}, shown as #{shown}"
    end
  end

  test "the rescue block prints the message with the traceback" do
    output =
      capture_io(fn ->
        try do
          Python.exec!("def inner():\n    raise ValueError('bad value')\ninner()")
        rescue
          e in Python.Error -> IO.puts(Exception.message(e))
        end
      end)

    assert output =~
             ~r/\AValueError: bad value\n\nPython traceback:\nTraceback \(most recent call last\):\n/

    assert output =~ ~s(  File "<string>", line 2, in inner\nValueError: bad value\n)
  end
end
