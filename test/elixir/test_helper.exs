# ExUnit tests of the Elixir API (lib/), run by `make test-elixir` (mix test).
# Mix starts the application :erlang_python (4 workers) before they run.
# They share the one pool of workers, so none of them runs async.
{:ok, _} = Application.ensure_all_started(:erlang_python)

defmodule PythonTest.Helpers do
  @moduledoc false

  # The pool's counters (py_pool:get_stats/0).
  def stats, do: :py_pool.get_stats()

  # Polls until fun returns a truthy value (the pool releases bindings of a
  # dead process asynchronously, from a monitor message).
  def eventually(fun, tries \\ 100) do
    case fun.() do
      result when result in [nil, false] and tries > 0 ->
        Process.sleep(20)
        eventually(fun, tries - 1)

      result ->
        result
    end
  end

  # Waits until every worker is in service and unbound again.
  def pool_idle! do
    num = Application.get_env(:erlang_python, :num_workers)

    true =
      eventually(fn ->
        match?(%{num_workers: ^num, available_workers: ^num, checked_out: 0}, stats())
      end)
  end
end

ExUnit.start()
