defmodule PythonStateTest do
  # Python.State (py:state_*), seen from Elixir and from Python; and the
  # application being stopped under the API.
  use ExUnit.Case, async: false
  import PythonTest.Helpers

  alias Python.State

  setup do
    pool_idle!()
    State.clear()
    on_exit(&State.clear/0)
  end

  test "put, fetch, get, delete, keys" do
    assert State.put(:greeting, "hello") == :ok
    assert State.fetch(:greeting) == {:ok, "hello"}
    # atom keys are stored as strings: one key
    assert State.fetch("greeting") == {:ok, "hello"}
    assert State.get(:greeting) == "hello"
    assert State.get(:missing) == nil
    assert State.get(:missing, :default) == :default
    assert State.fetch(:missing) == :error
    :ok = State.put({:user, 1}, %{name: "ada"})
    assert Enum.sort(State.keys()) == Enum.sort(["greeting", {:user, 1}])
    assert State.delete(:greeting) == :ok
    assert State.delete(:greeting) == :ok
    assert State.fetch(:greeting) == :error
    assert State.clear() == :ok
    assert State.keys() == []
  end

  test "counters" do
    assert State.incr(:hits) == 1
    assert State.incr(:hits, 10) == 11
    assert State.decr(:hits) == 10
    assert State.decr(:hits, 4) == 6
    assert State.decr(:fresh) == -1
    :ok = State.put(:text, "x")
    assert_raise ArgumentError, fn -> State.incr(:text) end
  end

  test "the same store from Python" do
    :ok = State.put(:counter, 10)
    assert Python.eval("__import__('erlang').state_get('counter')") == {:ok, 10}
    assert Python.eval("__import__('erlang').state_incr('counter', 5)") == {:ok, 15}
    assert State.get(:counter) == 15
    {:ok, _} = Python.eval("__import__('erlang').state_set('from_python', {'k': [1, 2]})")
    assert State.fetch(:from_python) == {:ok, %{"k" => [1, 2]}}
    assert Python.eval("__import__('erlang').state_get('missing', 'default')") == {:ok, "default"}
  end

  test "state survives across unbound calls, whichever worker runs them" do
    for _ <- 1..20, do: {:ok, _} = Python.eval("__import__('erlang').state_incr('calls')")
    assert State.get(:calls) == 20
  end

  test "with the application stopped: :not_running, then it starts again" do
    # the application controller's "exited: stopped" report is expected
    %{level: level} = :logger.get_primary_config()
    :ok = :logger.set_primary_config(:level, :warning)
    :ok = Application.stop(:erlang_python)
    :ok = :logger.set_primary_config(:level, level)

    try do
      assert {:error, %Python.Error{reason: :not_running} = e} = Python.eval("1 + 1")
      assert e.message =~ "not running"
      assert {:error, %Python.Error{reason: :not_running}} = Python.bind()
      assert Python.unbind() == :ok
      assert Python.bound?() == false
    after
      {:ok, _} = Application.ensure_all_started(:erlang_python)
    end

    pool_idle!()
    assert Python.call(:math, :sqrt, [16]) == {:ok, 4.0}
  end
end
